package controllers

import (
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// CacheOptions keeps only the Jobs and pods that carry the batch.queuejob.io/queuejob
// label in the manager's cache, so that its memory follows the QueueJobs' own objects and
// not every Job and pod of the cluster.
func CacheOptions() cache.Options {
	req, err := labels.NewRequirement(qjv1.LabelQueueJob, selection.Exists, nil)
	if err != nil {
		panic(err) // a constant, valid label key
	}
	sel := labels.NewSelector().Add(*req)
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&batchv1.Job{}: {Label: sel},
		&corev1.Pod{}:  {Label: sel},
	}}
}
