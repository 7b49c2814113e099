package v1alpha1

// EffectiveMode is spec.mode with its default applied.
func (s *QueueJobSpec) EffectiveMode() Mode {
	if s.Mode == "" {
		return DefaultMode
	}
	return s.Mode
}

// EffectiveItemsPerPod is spec.itemsPerPod with its default applied.
func (s *QueueJobSpec) EffectiveItemsPerPod() int32 { return deref(s.ItemsPerPod, DefaultItemsPerPod) }

// EffectiveParallelism is spec.jobTemplate.spec.parallelism with its default (a Job's)
// applied: the most pods that run at once.
func (s *QueueJobSpec) EffectiveParallelism() int32 { return deref(s.JobTemplate.Spec.Parallelism, 1) }

// EffectiveRefill is spec.refill with its default applied.
func (s *QueueJobSpec) EffectiveRefill() Refill {
	if s.Refill == "" {
		return DefaultRefill
	}
	return s.Refill
}

// EffectiveDeadLetterPolicy is spec.deadLetterPolicy with its default applied (the API
// server applies it too; objects stored before the field existed may lack it).
func (s *QueueJobSpec) EffectiveDeadLetterPolicy() DeadLetterPolicy {
	if s.DeadLetterPolicy == "" {
		return DeadLetterPolicyFail
	}
	return s.DeadLetterPolicy
}

// EffectiveProbeIntervalSeconds is spec.probeIntervalSeconds with its default applied.
func (s *QueueJobSpec) EffectiveProbeIntervalSeconds() int32 {
	return deref(s.ProbeIntervalSeconds, DefaultProbeIntervalSeconds)
}

// IsSuspended reports whether spec.suspend is true.
func (s *QueueJobSpec) IsSuspended() bool { return s.Suspend != nil && *s.Suspend }

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// EffectiveDrainGracePeriodSeconds is spec.drainGracePeriodSeconds with its default applied.
func (s *QueueJobSpec) EffectiveDrainGracePeriodSeconds() int32 {
	return deref(s.DrainGracePeriodSeconds, DefaultDrainGracePeriodSeconds)
}

// EffectiveSuccessfulWavesHistoryLimit is spec.successfulWavesHistoryLimit with its default applied.
func (s *QueueJobSpec) EffectiveSuccessfulWavesHistoryLimit() int32 {
	return deref(s.SuccessfulWavesHistoryLimit, DefaultSuccessfulWavesHistoryLimit)
}

// EffectiveConsecutiveFailedWavesLimit is how many waves in a row may fail before a refill
// Continuous QueueJob fails.
func (s *QueueJobSpec) EffectiveConsecutiveFailedWavesLimit() int32 {
	return deref(s.ConsecutiveFailedWavesLimit, DefaultConsecutiveFailedWavesLimit)
}

// EffectiveFailedWavesHistoryLimit is spec.failedWavesHistoryLimit with its default applied.
func (s *QueueJobSpec) EffectiveFailedWavesHistoryLimit() int32 {
	return deref(s.FailedWavesHistoryLimit, DefaultFailedWavesHistoryLimit)
}

// DeadLetteredThisRun is how many items were dead-lettered during the QueueJob's run:
// deadLettered beyond deadLetteredAtStart, never below 0 (requeued items lower the count);
// 0 before the start was recorded.
func (q *QueueStatus) DeadLetteredThisRun() int64 {
	if q == nil || q.DeadLetteredAtStart == nil {
		return 0
	}
	return max(q.DeadLettered-*q.DeadLetteredAtStart, 0)
}
