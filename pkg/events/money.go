package events

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Money is an amount in cents. It is written as a decimal string with exactly
// two places ("12.50") and parsed from one without ever passing through a
// float, so 0.10 + 0.20 is 0.30.
type Money int64

// MaxMoney bounds every amount (999,999,999,999,999.99), so that sums of
// many amounts stay far from int64 overflow.
const MaxMoney Money = 1e17 - 1

// Errors ParseMoney returns; a handler tells the caller which rule was broken.
var (
	ErrMoneySyntax    = errors.New("amount is not a decimal number")
	ErrMoneyPrecision = errors.New("amount has more than two decimal places")
	ErrMoneyRange     = errors.New("amount is too large")
)

// ParseMoney parses a decimal string with at most two decimal places and an
// optional leading minus: "12", "12.5", "12.50", "-3.00".
func ParseMoney(s string) (Money, error) {
	neg := strings.HasPrefix(s, "-")
	body := strings.TrimPrefix(s, "-")
	whole, frac, hasDot := strings.Cut(body, ".")
	if whole == "" || !digits(whole) || (hasDot && (frac == "" || !digits(frac))) {
		return 0, fmt.Errorf("%w: %q", ErrMoneySyntax, s)
	}
	if len(frac) > 2 {
		return 0, fmt.Errorf("%w: %q", ErrMoneyPrecision, s)
	}
	whole = strings.TrimLeft(whole, "0")
	if len(whole) > 15 {
		return 0, fmt.Errorf("%w: %q", ErrMoneyRange, s)
	}
	var units int64
	if whole != "" {
		var err error
		if units, err = strconv.ParseInt(whole, 10, 64); err != nil {
			return 0, fmt.Errorf("%w: %q", ErrMoneySyntax, s)
		}
	}
	frac += strings.Repeat("0", 2-len(frac))
	cents, _ := strconv.ParseInt(frac, 10, 64)
	m := Money(units*100 + cents)
	if m > MaxMoney {
		return 0, fmt.Errorf("%w: %q", ErrMoneyRange, s)
	}
	if neg {
		m = -m
	}
	return m, nil
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// String renders the amount with exactly two decimal places.
func (m Money) String() string {
	var b []byte
	u := uint64(m)
	if m < 0 {
		b = append(b, '-')
		u = uint64(-(m + 1)) + 1 // no overflow at math.MinInt64
	}
	b = strconv.AppendUint(b, u/100, 10)
	b = append(b, '.', byte('0'+u%100/10), byte('0'+u%10))
	return string(b)
}

// Mul returns m times n, and false if the product leaves the range of
// MaxMoney.
func (m Money) Mul(n int64) (Money, bool) {
	if n != 0 && (m > MaxMoney/Money(n) || m < -MaxMoney/Money(n)) {
		return 0, false
	}
	return m * Money(n), true
}

// MarshalJSON writes the amount as a JSON string.
func (m Money) MarshalJSON() ([]byte, error) {
	return []byte(`"` + m.String() + `"`), nil
}

// UnmarshalJSON reads the amount from a JSON string; a JSON number is refused
// because it invites a float somewhere on the way.
func (m *Money) UnmarshalJSON(b []byte) error {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return fmt.Errorf("%w: amounts are strings such as \"12.50\", got %s", ErrMoneySyntax, b)
	}
	v, err := ParseMoney(string(b[1 : len(b)-1]))
	if err != nil {
		return err
	}
	*m = v
	return nil
}
