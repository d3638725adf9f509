//go:build race

package customer

const raceEnabled = true
