package main

import (
	"math/big"
	"strings"
	"testing"
)

// The first 100 decimals of pi, from the literature (OEIS A000796).
const knownPi = "3.1415926535897932384626433832795028841971693993751058209749445923078164062862089986280348253421170679"

// roundTo rounds knownPi to n significant digits (n < 101), half up, as bpi(n) does.
func roundTo(n int) string {
	d := []byte(strings.Replace(knownPi, ".", "", 1))
	out := append([]byte(nil), d[:n]...)
	if d[n] >= '5' {
		for i := n - 1; i >= 0; i-- {
			if out[i] < '9' {
				out[i]++
				break
			}
			out[i] = '0'
		}
	}
	if n == 1 {
		return string(out)
	}
	return string(out[:1]) + "." + string(out[1:])
}

func TestDigitsMatchesKnownPi(t *testing.T) {
	for n := 1; n <= 100; n++ {
		if got, want := Digits(n), roundTo(n); got != want {
			t.Errorf("Digits(%d) = %q, want %q", n, got, want)
		}
	}
	if got := Digits(5); got != "3.1416" {
		t.Errorf("Digits(5) = %q, want 3.1416", got)
	}
}

func TestTheArticlesTwoThousandDigits(t *testing.T) {
	got := Digits(2000)
	if len(got) != 2001 || !strings.HasPrefix(got, knownPi[:99]) {
		t.Fatalf("Digits(2000): %d characters, prefix %q", len(got), got[:min(len(got), 100)])
	}
	// A longer computation agrees up to the rounded last digit.
	if longer := Digits(2100); got[:1999] != longer[:1999] {
		t.Errorf("Digits(2000) and Digits(2100) disagree before the last digits")
	}
	// An independent formula (Størmer's: pi/4 = 44 arctan(1/57) + 7 arctan(1/239) -
	// 12 arctan(1/682) + 24 arctan(1/12943)) gives the same 1999 decimals.
	scale := new(big.Int).Exp(big.NewInt(10), big.NewInt(2010), nil)
	st := new(big.Int)
	for _, term := range []struct{ k, x int64 }{{44, 57}, {7, 239}, {-12, 682}, {24, 12943}} {
		st.Add(st, new(big.Int).Mul(arctanInv(term.x, scale), big.NewInt(4*term.k)))
	}
	if want := st.String()[:1999]; strings.Replace(got, ".", "", 1)[:1999] != want {
		t.Errorf("Digits(2000) disagrees with Størmer's formula")
	}
}
