//go:build race

package stepfunctions_test

const raceEnabled = true
