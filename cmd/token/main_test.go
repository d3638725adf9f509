package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/internal/auth"
)

func TestTokenCommand(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef-test"
	env := func(k string) string {
		return map[string]string{"AUTH_HS256_SECRET": secret, "AUTH_AUDIENCE": "eventsaga"}[k]
	}
	v, err := auth.New(context.Background(), auth.Config{HS256Secret: secret, Audience: "eventsaga"}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	customer := uuid.New()
	for _, tc := range []struct {
		args []string
		want auth.Principal
	}{
		{[]string{"-customer", customer.String()}, auth.Principal{Subject: customer}},
		{[]string{"-admin", "-sub", customer.String(), "-ttl", "5m"}, auth.Principal{Subject: customer, Admin: true}},
	} {
		var out strings.Builder
		if err := run(tc.args, env, &out); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		p, err := v.Verify(context.Background(), "Bearer "+strings.TrimSpace(out.String()))
		if err != nil || p != tc.want {
			t.Errorf("%v: %+v, %v; want %+v", tc.args, p, err, tc.want)
		}
	}
	for _, bad := range [][]string{{}, {"-admin", "-customer", customer.String()}, {"-customer", "bob"}, {"-admin", "-sub", "x"}, {"-admin", "-ttl", "-1m"}} {
		if err := run(bad, env, &strings.Builder{}); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
	if err := run([]string{"-admin"}, func(string) string { return "" }, &strings.Builder{}); err == nil || !strings.Contains(err.Error(), "AUTH_HS256_SECRET") {
		t.Errorf("without a secret: %v", err)
	}
}
