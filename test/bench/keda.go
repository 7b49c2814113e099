package main

import (
	"context"
	"fmt"
)

// startKEDA starts KEDA's operator against the control plane.
func (b *bench) startKEDA(ctx context.Context, cp *ControlPlane, tag string) (*Operator, error) {
	return nil, fmt.Errorf("not yet")
}
