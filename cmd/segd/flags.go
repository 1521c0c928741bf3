package main

import "fmt"

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
