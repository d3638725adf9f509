// Package kafkaacl is who may do what on the system's Kafka cluster when it
// runs an authorizer: one principal per service, each with the least it
// needs (Grants), and the admin's calls that set a cluster up that way
// (Apply: SCRAM users, topics, ACLs). make kafka-secure applies it to the
// secured broker; the tests apply the same table to theirs.
package kafkaacl

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eventsaga/eventsaga/pkg/outbox"
)

// Names are the topics and consumer groups the grants are about.
type Names struct {
	OrdersTopic, CustomersTopic string
	// The services' consumer groups (CONSUMER_GROUP). The projector's is
	// a base: it consumes as <base>.g<N>, a group per generation of its
	// read model, and a rebuild makes the next one.
	OrderGroup, CustomerGroup, ProjectorGroup string
}

// DefaultNames are the contract's topics and the services' default groups.
func DefaultNames() Names {
	return Names{
		OrdersTopic: "orders.events", CustomersTopic: "customers.events",
		OrderGroup: "order-service", CustomerGroup: "customer-service", ProjectorGroup: "projector",
	}
}

// Users are the SASL user names the services connect as (KAFKA_USERNAME):
// each service's principal is User:<name>.
type Users struct{ Order, Customer, Projector string }

// Grant allows User the operations Ops on a topic or group, named exactly
// (Prefix false) or every one whose name starts with Name (Prefix true).
// READ and WRITE imply DESCRIBE, as Kafka's authorizer has it.
type Grant struct {
	User     string
	Resource kmsg.ACLResourceType
	Name     string
	Prefix   bool
	Ops      []kmsg.ACLOperation
}

// Grants are the ACLs of least privilege for u's principals:
//
//   - order: write orders.events; read customers.events as its group; write
//     its dead-letter topic, dlq.<group>.
//   - customer: the mirror.
//   - projector: read both topics, as any group <base>.<…> (one per
//     generation); create and write their dead-letter topics,
//     dlq.<base>.<…>, since a rebuild's new generation makes its own.
//
// Nothing else: no principal may create the event topics, alter or delete
// anything, or touch another service's group.
func Grants(n Names, u Users) []Grant {
	read, write, create := kmsg.ACLOperationRead, kmsg.ACLOperationWrite, kmsg.ACLOperationCreate
	topic, group := kmsg.ACLResourceTypeTopic, kmsg.ACLResourceTypeGroup
	return []Grant{
		{User: u.Order, Resource: topic, Name: n.OrdersTopic, Ops: ops(write)},
		{User: u.Order, Resource: topic, Name: n.CustomersTopic, Ops: ops(read)},
		{User: u.Order, Resource: group, Name: n.OrderGroup, Ops: ops(read)},
		{User: u.Order, Resource: topic, Name: DLQTopic(n.OrderGroup), Ops: ops(write)},

		{User: u.Customer, Resource: topic, Name: n.CustomersTopic, Ops: ops(write)},
		{User: u.Customer, Resource: topic, Name: n.OrdersTopic, Ops: ops(read)},
		{User: u.Customer, Resource: group, Name: n.CustomerGroup, Ops: ops(read)},
		{User: u.Customer, Resource: topic, Name: DLQTopic(n.CustomerGroup), Ops: ops(write)},

		{User: u.Projector, Resource: topic, Name: n.OrdersTopic, Ops: ops(read)},
		{User: u.Projector, Resource: topic, Name: n.CustomersTopic, Ops: ops(read)},
		{User: u.Projector, Resource: group, Name: n.ProjectorGroup + ".", Prefix: true, Ops: ops(read)},
		{User: u.Projector, Resource: topic, Name: DLQTopic(n.ProjectorGroup) + ".", Prefix: true, Ops: ops(create, write)},
	}
}

func ops(o ...kmsg.ACLOperation) []kmsg.ACLOperation { return o }

// DLQTopic is a group's dead-letter topic (outbox.ConsumerConfig.DLQTopic's
// default).
func DLQTopic(group string) string { return "dlq." + group }

// Topics are the topics an admin creates before the services start: the
// event topics, and the dead-letter topics of the order and customer
// services, which may not create them.
func Topics(n Names) []string {
	return []string{n.OrdersTopic, n.CustomersTopic, DLQTopic(n.OrderGroup), DLQTopic(n.CustomerGroup)}
}

// Apply sets the cluster up, through admin (a superuser's client): a
// SCRAM-SHA-512 user for each name of passwords (created, or its password
// changed), the topics of n (outbox.EnsureTopics), and the grants. Each step
// is idempotent: applying again changes nothing but the passwords.
func Apply(ctx context.Context, admin *kgo.Client, n Names, passwords map[string]string, grants []Grant) error {
	adm := kadm.NewClient(admin)
	if len(passwords) > 0 {
		// 4096 iterations: kafka-configs' default, and the only count
		// kfake's SCRAM exchange announces (it ignores the stored one).
		var upserts []kadm.UpsertSCRAM
		for _, user := range slices.Sorted(maps.Keys(passwords)) {
			upserts = append(upserts, kadm.UpsertSCRAM{User: user, Mechanism: kadm.ScramSha512, Iterations: 4096, Password: passwords[user]})
		}
		res, err := adm.AlterUserSCRAMs(ctx, nil, upserts)
		if err != nil {
			return fmt.Errorf("scram users: %w", err)
		}
		for _, r := range res {
			if r.Err != nil {
				return fmt.Errorf("scram user %s: %w", r.User, r.Err)
			}
		}
	}
	if err := outbox.EnsureTopics(ctx, admin, Topics(n)...); err != nil {
		return err
	}
	var errs []error
	for _, g := range grants {
		b := kadm.NewACLs().Allow("User:" + g.User).Operations(g.Ops...)
		if g.Prefix {
			b.ResourcePatternType(kadm.ACLPatternPrefixed)
		}
		switch g.Resource {
		case kmsg.ACLResourceTypeTopic:
			b.Topics(g.Name)
		case kmsg.ACLResourceTypeGroup:
			b.Groups(g.Name)
		default:
			return fmt.Errorf("grant to %s: resource type %v is neither topic nor group", g.User, g.Resource)
		}
		res, err := adm.CreateACLs(ctx, b)
		if err != nil {
			return fmt.Errorf("acls of %s: %w", g.User, err)
		}
		for _, r := range res {
			if r.Err != nil {
				errs = append(errs, fmt.Errorf("acl %s %v %s %v: %w %s", r.Principal, r.Type, r.Name, r.Operation, r.Err, r.ErrMessage))
			}
		}
	}
	return errors.Join(errs...)
}

// Forget takes everything from u's principals: their ACLs and their SCRAM
// credentials. A principal that is not there is no error.
func Forget(ctx context.Context, admin *kgo.Client, u Users) error {
	adm := kadm.NewClient(admin)
	users := []string{u.Order, u.Customer, u.Projector}
	var principals []string
	var dels []kadm.DeleteSCRAM
	for _, user := range users {
		principals = append(principals, "User:"+user)
		dels = append(dels, kadm.DeleteSCRAM{User: user, Mechanism: kadm.ScramSha512})
	}
	filter := kadm.NewACLs().MaybeAllow(principals...).AllowHosts().AnyResource().ResourcePatternType(kadm.ACLPatternAny).Operations()
	if _, err := adm.DeleteACLs(ctx, filter); err != nil {
		return fmt.Errorf("delete acls: %w", err)
	}
	res, err := adm.AlterUserSCRAMs(ctx, dels, nil)
	if err != nil {
		return fmt.Errorf("delete scram users: %w", err)
	}
	var errs []error
	for _, r := range res {
		if r.Err != nil && !errors.Is(r.Err, kerr.ResourceNotFound) {
			errs = append(errs, fmt.Errorf("scram user %s: %w", r.User, r.Err))
		}
	}
	return errors.Join(errs...)
}

// String is the grant as a line of a table: "order  WRITE  topic orders.events".
func (g Grant) String() string {
	var o []string
	for _, op := range g.Ops {
		o = append(o, op.String())
	}
	name := g.Name
	if g.Prefix {
		name += "*"
	}
	return fmt.Sprintf("User:%s %s %s %s", g.User, strings.Join(o, ","), strings.ToLower(g.Resource.String()), name)
}
