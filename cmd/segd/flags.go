package main

import (
	"fmt"
	"time"
)

// Checks of numeric command-line flags. Each returns an error that names
// the flag, the value and what is allowed; commands print it and exit 2.

// positiveInt requires v >= 1.
func positiveInt(name string, v int) error {
	if v < 1 {
		return fmt.Errorf("%s %d: must be at least 1", name, v)
	}
	return nil
}

// intBetween requires lo <= v <= hi.
func intBetween(name string, v, lo, hi int) error {
	if v < lo || v > hi {
		return fmt.Errorf("%s %d: must be between %d and %d", name, v, lo, hi)
	}
	return nil
}

// firstError returns the first non-nil error.
func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// positiveDuration requires v > 0.
func positiveDuration(name string, v time.Duration) error {
	if v <= 0 {
		return fmt.Errorf("%s %s: must be more than 0", name, v)
	}
	return nil
}

// nonNegativeDuration requires v >= 0.
func nonNegativeDuration(name string, v time.Duration) error {
	if v < 0 {
		return fmt.Errorf("%s %s: must not be negative", name, v)
	}
	return nil
}

// Limits of the flags of demo, gen and broker.
const (
	maxPartitions = 1000        // per topic of the embedded broker, or created by gen
	maxCustomers  = 100_000_000 // what the generator accepts
	maxRate       = 10_000_000  // events per second
)
