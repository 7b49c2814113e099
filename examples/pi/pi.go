// Command pi prints pi to a number of significant digits, as the Kubernetes docs' example
// Job does with perl -Mbignum=bpi -wle 'print bpi(2000)'. It is the worker of the seed's
// first example (config/samples/batch_v1alpha1_queuejob_pi.yaml).
package main

import (
	"flag"
	"fmt"
	"math/big"
	"os"
	"strings"
)

// Digits returns pi to n significant digits: "3." and n-1 decimals, the last one rounded,
// as bpi(n) prints it.
func Digits(n int) string {
	if n < 1 {
		return ""
	}
	const guard = 10
	scale := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n-1+guard)), nil)
	// Machin's formula: pi = 16 arctan(1/5) - 4 arctan(1/239).
	pi := new(big.Int).Mul(arctanInv(5, scale), big.NewInt(16))
	pi.Sub(pi, new(big.Int).Mul(arctanInv(239, scale), big.NewInt(4)))
	// Round away the guard digits.
	div := new(big.Int).Exp(big.NewInt(10), big.NewInt(guard), nil)
	pi.Add(pi, new(big.Int).Div(div, big.NewInt(2)))
	pi.Div(pi, div)
	s := pi.String()
	if n == 1 {
		return s
	}
	return s[:1] + "." + s[1:]
}

// arctanInv returns arctan(1/x) * scale by its Taylor series.
func arctanInv(x int64, scale *big.Int) *big.Int {
	sum := new(big.Int)
	xx := big.NewInt(x * x)
	term := new(big.Int).Div(scale, big.NewInt(x)) // scale / x^(2k+1)
	for k := int64(0); term.Sign() != 0; k++ {
		t := new(big.Int).Div(term, big.NewInt(2*k+1))
		if k%2 == 0 {
			sum.Add(sum, t)
		} else {
			sum.Sub(sum, t)
		}
		term.Div(term, xx)
	}
	return sum
}

func main() {
	digits := flag.Int("digits", 2000, "significant digits to print (the article's bpi(2000))")
	flag.Parse()
	if *digits < 1 || *digits > 1_000_000 {
		fmt.Fprintln(os.Stderr, "pi: -digits must be between 1 and 1000000")
		os.Exit(2)
	}
	fmt.Println(strings.TrimSpace(Digits(*digits)))
}
