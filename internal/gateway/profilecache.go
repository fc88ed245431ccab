package gateway

import (
	"container/list"
	"sync"
	"time"
)

// Bounds of the profile cache: a profile is a few hundred bytes, so the
// cache holds at most a few megabytes; and a copy older than ten minutes
// is worse than an honest 503 (a rating, a name may have changed since).
const (
	profileCacheSize = 10_000
	profileCacheAge  = 10 * time.Minute
)

// profileCache keeps the profiles the gateway last relayed, so GET /v1/me
// can still answer, marked stale, while users is down. It is keyed by the
// profile's own user id and read with the verified caller's, so a caller
// only ever sees their own profile. It holds at most max profiles (the
// least recently used go first), each for at most maxAge after users last
// gave it.
type profileCache struct {
	max    int
	maxAge time.Duration
	now    func() time.Time

	mu    sync.Mutex
	order *list.List // of *cachedProfile, most recently used first
	byID  map[string]*list.Element
}

type cachedProfile struct {
	profile profileJSON
	stored  time.Time
}

func newProfileCache(max int, maxAge time.Duration, now func() time.Time) *profileCache {
	return &profileCache{max: max, maxAge: maxAge, now: now, order: list.New(), byID: map[string]*list.Element{}}
}

// put keeps p, users' latest word on it.
func (c *profileCache) put(p profileJSON) {
	if p.ID == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	entry := &cachedProfile{profile: p, stored: c.now()}
	if el, ok := c.byID[p.ID]; ok {
		el.Value = entry
		c.order.MoveToFront(el)
		return
	}
	c.byID[p.ID] = c.order.PushFront(entry)
	for c.order.Len() > c.max {
		c.remove(c.order.Back())
	}
}

// get is the profile of user id and how old it is, if one is kept and
// young enough.
func (c *profileCache) get(id string) (profileJSON, time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byID[id]
	if !ok {
		return profileJSON{}, 0, false
	}
	entry := el.Value.(*cachedProfile)
	age := c.now().Sub(entry.stored)
	if age > c.maxAge {
		c.remove(el)
		return profileJSON{}, 0, false
	}
	c.order.MoveToFront(el)
	return entry.profile, max(age, 0), true
}

// forget drops user id's profile: users answered about it, and an older
// copy must not contradict that later (an account removed, say).
func (c *profileCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byID[id]; ok {
		c.remove(el)
	}
}

// size is how many profiles are kept.
func (c *profileCache) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// remove drops el; c.mu is held.
func (c *profileCache) remove(el *list.Element) {
	c.order.Remove(el)
	delete(c.byID, el.Value.(*cachedProfile).profile.ID)
}
