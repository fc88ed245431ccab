package notifications

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	notificationsv1 "github.com/rideshare-platform/rideshare/api/notifications/v1"
	ridesv1 "github.com/rideshare-platform/rideshare/api/rides/v1"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// typeRideStatus is the notification type of every ride status change.
const typeRideStatus = "ride.status_changed"

// messages are what a person reads for each status, by recipient.
var messages = map[ridesv1.RideStatus][2]string{ // [rider, driver]
	ridesv1.RideStatus_RIDE_STATUS_REQUESTED:        {"We got your ride request", ""},
	ridesv1.RideStatus_RIDE_STATUS_SEARCHING:        {"Looking for a driver near you", ""},
	ridesv1.RideStatus_RIDE_STATUS_DRIVER_ASSIGNED:  {"A driver is on the way", "You accepted a ride: head to the pickup"},
	ridesv1.RideStatus_RIDE_STATUS_DRIVER_ARRIVED:   {"Your driver has arrived", "You are at the pickup"},
	ridesv1.RideStatus_RIDE_STATUS_IN_PROGRESS:      {"Your trip has started", "Trip started"},
	ridesv1.RideStatus_RIDE_STATUS_COMPLETED:        {"You have arrived. Thanks for riding", "Trip completed"},
	ridesv1.RideStatus_RIDE_STATUS_CANCELLED:        {"Your ride was cancelled", "The ride was cancelled"},
	ridesv1.RideStatus_RIDE_STATUS_PAYMENT_DECLINED: {"Your payment was declined: no ride was booked", ""},
	ridesv1.RideStatus_RIDE_STATUS_NO_DRIVER:        {"No driver was found: you were not charged", ""},
}

// deliveryLog stores notifications.
type deliveryLog struct{ db *sqldb.DB }

// add records n (its id is assigned here) in tx.
func (l *deliveryLog) add(ctx context.Context, tx *sqldb.Tx, n *notificationsv1.Notification) error {
	id, err := uuid.NewV7()
	if err != nil {
		return err
	}
	n.Id = id.String()
	_, err = tx.ExecContext(ctx, `INSERT INTO notifications (id, user_id, ride_id, type, ride_status, at, message) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		n.Id, n.UserId, n.RideId, n.Type, int64(n.RideStatus), sqldb.Micros(n.Time.AsTime()), n.Message)
	if err != nil {
		return fmt.Errorf("notifications: add: %w", err)
	}
	return nil
}

// list returns userID's notifications after afterID (oldest first),
// optionally only one ride's.
func (l *deliveryLog) list(ctx context.Context, userID, rideID, afterID string, limit int) ([]*notificationsv1.Notification, error) {
	var rows *sql.Rows
	var err error
	const cols = `SELECT id, user_id, ride_id, type, ride_status, at, message FROM notifications`
	if rideID != "" {
		rows, err = l.db.Reader().QueryContext(ctx, cols+` WHERE user_id = $1 AND id > $2 AND ride_id = $3 ORDER BY id LIMIT $4`, userID, afterID, rideID, limit)
	} else {
		rows, err = l.db.Reader().QueryContext(ctx, cols+` WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3`, userID, afterID, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("notifications: list: %w", err)
	}
	defer rows.Close()
	var out []*notificationsv1.Notification
	for rows.Next() {
		var n notificationsv1.Notification
		var status, at int64
		if err := rows.Scan(&n.Id, &n.UserId, &n.RideId, &n.Type, &status, &at, &n.Message); err != nil {
			return nil, fmt.Errorf("notifications: scan: %w", err)
		}
		n.RideStatus = ridesv1.RideStatus(status)
		n.Time = timestamppb.New(sqldb.Time(at))
		out = append(out, &n)
	}
	return out, rows.Err()
}

// latestID is the id of userID's newest notification, or "" if none: the
// position a subscriber that wants only new notifications starts from.
func (l *deliveryLog) latestID(ctx context.Context, userID string) (string, error) {
	var id sql.NullString
	err := l.db.Reader().QueryRowContext(ctx, `SELECT max(id) FROM notifications WHERE user_id = $1`, userID).Scan(&id)
	return id.String, err
}

// statusAt is the ride and time of userID's notification id, ok false when
// there is none (the "0" that replays from the start).
func (l *deliveryLog) statusAt(ctx context.Context, userID, id string) (rideID string, at time.Time, ok bool, err error) {
	var us int64
	err = l.db.Reader().QueryRowContext(ctx, `SELECT ride_id, at FROM notifications WHERE id = $1 AND user_id = $2`, id, userID).Scan(&rideID, &us)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", time.Time{}, false, nil
	case err != nil:
		return "", time.Time{}, false, fmt.Errorf("notifications: status at %s: %w", id, err)
	}
	return rideID, sqldb.Time(us), true, nil
}

// statusNotifications are the messages one status change produces: one for
// the rider and, once a driver is involved, one for the driver.
func statusNotifications(rideID, riderID, driverID string, status ridesv1.RideStatus, at time.Time) []*notificationsv1.Notification {
	text := messages[status]
	var out []*notificationsv1.Notification
	for i, user := range []string{riderID, driverID} {
		if user == "" {
			continue
		}
		msg := text[i]
		if msg == "" {
			if i == 1 {
				continue // nothing a driver needs to hear about this status
			}
			msg = "Your ride is " + status.String()
		}
		out = append(out, &notificationsv1.Notification{
			UserId: user, RideId: rideID, Type: typeRideStatus, RideStatus: status, Time: timestamppb.New(at), Message: msg,
		})
	}
	return out
}
