{{/* The chart name, or .Values.nameOverride. */}}
{{- define "queuejob-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The objects' base name: .Values.fullnameOverride, else release-chart (just the release when it contains the chart name).
Cut to 47 characters, so that with the longest suffix the chart adds to it, "-leader-election" (16), a name stays within 63. */}}
{{- define "queuejob-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 47 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "queuejob-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "queuejob-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the manager pods. */}}
{{- define "queuejob-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "queuejob-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The manager's ServiceAccount. */}}
{{- define "queuejob-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "queuejob-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The metrics scheme, https with metrics.secure, else http; also the name of the Service's port. */}}
{{- define "queuejob-operator.metricsScheme" -}}
{{- if .Values.metrics.secure }}https{{ else }}http{{ end }}
{{- end }}

{{/* The metrics port: metrics.port, else 8443 with metrics.secure and 8080 without. */}}
{{- define "queuejob-operator.metricsPort" -}}
{{- if .Values.metrics.port }}{{ .Values.metrics.port }}{{ else if .Values.metrics.secure }}8443{{ else }}8080{{ end }}
{{- end }}

{{/* "true" when the secure metrics endpoint serves the certificate of metrics.certSecret. */}}
{{- define "queuejob-operator.metricsCert" -}}
{{- if and .Values.metrics.enabled .Values.metrics.secure .Values.metrics.certSecret }}true{{ end }}
{{- end }}
