package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

// kueueAPI applies and deletes Kueue's CRDs and webhook configurations, with server-side
// apply as the field manager queuejob-cluster.
type kueueAPI struct {
	cs  kubernetes.Interface
	ext apiextclient.Interface
}

const fieldManager = "queuejob-cluster"

func (c *Cluster) kueueAPI() (*kueueAPI, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig())
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 30 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	ext, err := apiextclient.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &kueueAPI{cs: cs, ext: ext}, nil
}

var applyOptions = metav1.PatchOptions{FieldManager: fieldManager, Force: ptr.To(true)}

// applyCRDs applies the CRDs and waits until each is Established.
func (a *kueueAPI) applyCRDs(crds []apiextv1.CustomResourceDefinition) error {
	ctx := context.Background()
	for i := range crds {
		b, err := json.Marshal(&crds[i])
		if err != nil {
			return err
		}
		if _, err := a.ext.ApiextensionsV1().CustomResourceDefinitions().Patch(ctx, crds[i].Name, types.ApplyPatchType, b, applyOptions); err != nil {
			return fmt.Errorf("apply CRD %s: %w", crds[i].Name, err)
		}
	}
	return poll(time.Minute, func() error {
		for _, crd := range crds {
			got, err := a.ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !established(got) {
				return fmt.Errorf("CRD %s is not Established", crd.Name)
			}
		}
		return nil
	})
}

func established(crd *apiextv1.CustomResourceDefinition) bool {
	for _, cond := range crd.Status.Conditions {
		if cond.Type == apiextv1.Established {
			return cond.Status == apiextv1.ConditionTrue
		}
	}
	return false
}

// applyWebhooks applies the two webhook configurations.
func (a *kueueAPI) applyWebhooks(mut *admissionv1.MutatingWebhookConfiguration, val *admissionv1.ValidatingWebhookConfiguration) error {
	ctx := context.Background()
	reg := a.cs.AdmissionregistrationV1()
	b, err := json.Marshal(mut)
	if err != nil {
		return err
	}
	if _, err := reg.MutatingWebhookConfigurations().Patch(ctx, mut.Name, types.ApplyPatchType, b, applyOptions); err != nil {
		return fmt.Errorf("apply MutatingWebhookConfiguration %s: %w", mut.Name, err)
	}
	if b, err = json.Marshal(val); err != nil {
		return err
	}
	if _, err := reg.ValidatingWebhookConfigurations().Patch(ctx, val.Name, types.ApplyPatchType, b, applyOptions); err != nil {
		return fmt.Errorf("apply ValidatingWebhookConfiguration %s: %w", val.Name, err)
	}
	return nil
}

// deleteWebhooks deletes the two webhook configurations; absent ones are fine.
func (a *kueueAPI) deleteWebhooks(mutating, validating string) error {
	ctx := context.Background()
	reg := a.cs.AdmissionregistrationV1()
	err := reg.MutatingWebhookConfigurations().Delete(ctx, mutating, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete MutatingWebhookConfiguration %s: %w", mutating, err)
	}
	err = reg.ValidatingWebhookConfigurations().Delete(ctx, validating, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete ValidatingWebhookConfiguration %s: %w", validating, err)
	}
	return nil
}

// deleteCRDs deletes the CRDs and waits until they are gone (with them every object of
// theirs, whose finalizers the running manager removes).
func (a *kueueAPI) deleteCRDs(names []string) error {
	ctx := context.Background()
	crds := a.ext.ApiextensionsV1().CustomResourceDefinitions()
	for _, n := range names {
		if err := crds.Delete(ctx, n, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete CRD %s: %w", n, err)
		}
	}
	return poll(2*time.Minute, func() error {
		for _, n := range names {
			_, err := crds.Get(ctx, n, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				return err
			}
			return fmt.Errorf("CRD %s is not gone after 2m: an object of it may keep a finalizer that only a running Kueue drops (up --kueue, then kueue-down again)", n)
		}
		return nil
	})
}

// poll calls f every half second until it succeeds or timeout passes.
func poll(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(500 * time.Millisecond)
	}
}
