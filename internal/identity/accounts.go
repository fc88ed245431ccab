package identity

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/google/uuid"

	identityv1 "github.com/rideshare-platform/rideshare/api/identity/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/auth"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// errBadCredentials is every failed sign-in: unknown email and wrong
// password are deliberately the same error.
var errBadCredentials = errors.New("identity: invalid email or password")

// accounts keeps accounts and checks their passwords.
type accounts struct {
	db     *sqldb.DB
	outbox *outbox.Outbox
	hasher *hasher
}

const accountColumns = `id, email, role, name, created_at, password_hash`

// create signs s up and announces the account, both in one transaction.
// It is idempotent by email, as the contract promises: a retry with the same
// email, role and password returns the account the first call created, so a
// gateway retrying after a timeout does not see its own sign-up as a
// conflict; any other request for a taken email is email_taken.
func (a *accounts) create(ctx context.Context, s signup) (Account, error) {
	if acc, hash, err := a.byEmail(ctx, s.email); err == nil {
		return a.replay(ctx, s, acc, hash)
	} else if !apperr.Is(err, apperr.NotFound) {
		return Account{}, err
	}
	// Hash before the transaction: the write connection is shared by the
	// whole service and must not wait on tens of milliseconds of argon2.
	hash, err := a.hasher.hash(ctx, s.password)
	if err != nil {
		return Account{}, err
	}
	acc := Account{ID: uuid.NewString(), Email: s.email, Role: s.role, Name: s.name, CreatedAt: now()}
	err = a.db.InTx(ctx, func(tx *sqldb.Tx) error {
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO accounts (id, email, password_hash, role, signup_role, name, created_at) VALUES ($1, $2, $3, $4, $4, $5, $6)`,
			acc.ID, acc.Email, hash, auth.RoleName(acc.Role), acc.Name, sqldb.Micros(acc.CreatedAt)); err != nil {
			return fmt.Errorf("identity: insert account: %w", err)
		}
		return a.outbox.Append(ctx, tx, outbox.Event{
			Type: "account.created", Key: acc.ID,
			Payload: &identityv1.AccountCreated{
				AccountId: acc.ID, Email: acc.Email, Role: acc.Role, Name: acc.Name, Vehicle: s.vehicle,
			},
		})
	})
	if sqldb.IsUniqueViolation(err) {
		// A concurrent sign-up for the same email won the race: answer as
		// if this request had arrived second.
		existing, hash, err := a.byEmail(ctx, s.email)
		if err != nil {
			return Account{}, err
		}
		return a.replay(ctx, s, existing, hash)
	}
	if err != nil {
		return Account{}, err
	}
	return acc, nil
}

// setRole applies c to the account with c's email, in one transaction so
// that two concurrent changes cannot interleave their read and write.
func (a *accounts) setRole(ctx context.Context, c roleChange) (roleResult, error) {
	var res roleResult
	err := a.db.InTx(ctx, func(tx *sqldb.Tx) error {
		var role, signupRole string
		var created int64
		acc := Account{Email: c.email}
		err := tx.QueryRowContext(ctx, `SELECT id, role, signup_role, name, created_at FROM accounts WHERE email = $1`, c.email).
			Scan(&acc.ID, &role, &signupRole, &acc.Name, &created)
		if errors.Is(err, sql.ErrNoRows) {
			return apperr.E(apperr.NotFound, "", "no account has this email")
		}
		if err != nil {
			return fmt.Errorf("identity: read account: %w", err)
		}
		acc.CreatedAt = sqldb.Time(created)
		res.previous = auth.RoleOf(role)
		target, err := c.target(res.previous, auth.RoleOf(signupRole))
		if err != nil {
			return err
		}
		acc.Role = target
		res.account, res.changed = acc, target != res.previous
		if !res.changed {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE accounts SET role = $1 WHERE id = $2`, auth.RoleName(target), acc.ID); err != nil {
			return fmt.Errorf("identity: set role: %w", err)
		}
		return nil
	})
	return res, err
}

// replay answers a sign-up for an email that already has an account.
func (a *accounts) replay(ctx context.Context, s signup, existing Account, hash string) (Account, error) {
	taken := apperr.E(apperr.Conflict, "email_taken", "an account with this email exists")
	if existing.Role != s.role {
		return Account{}, taken
	}
	ok, err := a.hasher.verify(ctx, hash, s.password)
	if err != nil {
		return Account{}, err
	}
	if !ok {
		return Account{}, taken
	}
	return existing, nil
}

// get reads one account.
func (a *accounts) get(ctx context.Context, id string) (Account, error) {
	acc, _, err := scanAccount(a.db.Reader().QueryRowContext(ctx,
		`SELECT `+accountColumns+` FROM accounts WHERE id = $1`, id))
	return acc, err
}

// byEmail reads the account with email (already normalised) and its hash.
func (a *accounts) byEmail(ctx context.Context, email string) (Account, string, error) {
	return scanAccount(a.db.Reader().QueryRowContext(ctx,
		`SELECT `+accountColumns+` FROM accounts WHERE email = $1`, email))
}

// authenticate returns the account whose email and password these are, or
// errBadCredentials. An unknown email costs the same hash as a wrong
// password, so timing tells nobody which emails have accounts.
func (a *accounts) authenticate(ctx context.Context, email, password string) (Account, error) {
	normal, valid := normaliseEmail(email)
	if !valid || len(password) > maxPassword {
		a.hasher.burn(ctx, password)
		return Account{}, errBadCredentials
	}
	acc, hash, err := a.byEmail(ctx, normal)
	if apperr.Is(err, apperr.NotFound) {
		a.hasher.burn(ctx, password)
		return Account{}, errBadCredentials
	}
	if err != nil {
		return Account{}, err
	}
	ok, err := a.hasher.verify(ctx, hash, password)
	if err != nil {
		return Account{}, err
	}
	if !ok {
		return Account{}, errBadCredentials
	}
	return acc, nil
}

func scanAccount(row *sql.Row) (Account, string, error) {
	var acc Account
	var role, hash string
	var created int64
	err := row.Scan(&acc.ID, &acc.Email, &role, &acc.Name, &created, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return Account{}, "", apperr.E(apperr.NotFound, "", "account not found")
	}
	if err != nil {
		return Account{}, "", fmt.Errorf("identity: read account: %w", err)
	}
	acc.Role = auth.RoleOf(role)
	acc.CreatedAt = sqldb.Time(created)
	return acc, hash, nil
}
