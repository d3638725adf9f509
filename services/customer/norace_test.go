//go:build !race

package customer

const raceEnabled = false
