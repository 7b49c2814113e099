//go:build tools

// Package keda pins KEDA's operator main package into this module so that
// `go build github.com/kedacore/keda/v2/cmd/operator` resolves against the
// versions selected in go.mod/go.sum. No KEDA code is copied here.
package keda

import _ "github.com/kedacore/keda/v2/cmd/operator"
