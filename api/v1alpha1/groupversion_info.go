// Package v1alpha1 contains the v1alpha1 API of the batch.queuejob.io group.
// +kubebuilder:object:generate=true
// +groupName=batch.queuejob.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of the QueueJob API.
	GroupVersion = schema.GroupVersion{Group: "batch.queuejob.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this group version with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
