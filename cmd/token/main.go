// Command token mints a development bearer token for the services' API,
// signed with AUTH_HS256_SECRET (the secret the services are started with),
// and prints it. Either a customer's token (its ID is the token's sub: it
// may act on that customer's orders only) or an admin's:
//
//	AUTH_HS256_SECRET=... bin/token -customer 0b6c…   (or make token CUSTOMER=0b6c…)
//	AUTH_HS256_SECRET=... bin/token -admin            (or make token ADMIN=1)
//
// The iss and aud claims are AUTH_ISSUER and AUTH_AUDIENCE when set, as the
// services check them. Production tokens come from an identity provider
// (AUTH_JWKS_URL), not from this.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/internal/auth"
)

func main() {
	if err := run(os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "token:", err)
		os.Exit(2)
	}
}

func run(args []string, getenv func(string) string, out io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	customer := fs.String("customer", "", "the customer (a UUID) the token is for")
	admin := fs.Bool("admin", false, "an admin's token (back office: every endpoint)")
	sub := fs.String("sub", "", "the admin's sub claim, a UUID (default: a new one)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	if err := fs.Parse(args); err != nil {
		return err
	}
	secret := getenv("AUTH_HS256_SECRET")
	if secret == "" {
		return errors.New("AUTH_HS256_SECRET is not set: set it to the secret the services run with")
	}
	if *ttl <= 0 {
		return fmt.Errorf("-ttl must be positive, not %s", *ttl)
	}
	var id uuid.UUID
	var err error
	switch {
	case *admin == (*customer != ""):
		return errors.New("give one of -customer ID and -admin")
	case *admin && *sub != "":
		if id, err = uuid.Parse(*sub); err != nil {
			return fmt.Errorf("-sub %q is not a UUID", *sub)
		}
	case *admin:
		id = uuid.New()
	default:
		if id, err = uuid.Parse(*customer); err != nil {
			return fmt.Errorf("-customer %q is not a UUID", *customer)
		}
	}
	tok, err := auth.Mint(secret, id, *admin, *ttl, getenv("AUTH_ISSUER"), getenv("AUTH_AUDIENCE"))
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, tok)
	return err
}
