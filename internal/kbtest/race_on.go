//go:build race

package kbtest

const raceEnabled = true
