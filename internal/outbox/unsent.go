package outbox

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// Unsent is the relay's backlog as an auditor needs it: how many events
// wait and since when. A live platform always has a few in flight; only
// an old one means the relay or the broker is stuck.
type Unsent struct {
	Count int `json:"count"`
	// Oldest is when the oldest unsent event was written; zero when none.
	Oldest time.Time `json:"oldest,omitzero"`
}

// Unsent reports the events not yet acknowledged by the broker.
func (o *Outbox) Unsent(ctx context.Context) (Unsent, error) {
	var u Unsent
	var oldest sql.NullInt64
	err := o.db.Reader().QueryRowContext(ctx, `SELECT count(*), min(created_at) FROM outbox WHERE sent_at IS NULL`).Scan(&u.Count, &oldest)
	if err != nil {
		return Unsent{}, fmt.Errorf("outbox: unsent: %w", err)
	}
	if oldest.Valid {
		u.Oldest = sqldb.Time(oldest.Int64)
	}
	return u, nil
}
