package ridesv1

// Terminal reports whether a ride in status s has ended: nothing about it
// changes any more, so a stream of its statuses ends there.
func (s RideStatus) Terminal() bool {
	switch s {
	case RideStatus_RIDE_STATUS_COMPLETED, RideStatus_RIDE_STATUS_CANCELLED,
		RideStatus_RIDE_STATUS_PAYMENT_DECLINED, RideStatus_RIDE_STATUS_NO_DRIVER:
		return true
	}
	return false
}
