//go:build !race

package lambdasqs_test

const raceEnabled = false
