package gateway

import (
	"fmt"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/testenv"
)

func TestProfileCache(t *testing.T) {
	prof := func(id string) profileJSON { return profileJSON{ID: id, Name: "name of " + id} }
	cases := []struct {
		name string
		// run acts on a cache of 3 profiles kept for a minute, and returns
		// the ids it should then hold.
		run  func(c *profileCache, clk *testenv.Clock)
		want []string
	}{
		{"each user their own", func(c *profileCache, _ *testenv.Clock) {
			c.put(prof("a"))
			c.put(prof("b"))
		}, []string{"a", "b"}},
		{"a fresh copy replaces the old", func(c *profileCache, _ *testenv.Clock) {
			c.put(prof("a"))
			c.put(profileJSON{ID: "a", Name: "renamed"})
		}, []string{"a"}},
		{"the least recently used goes first", func(c *profileCache, _ *testenv.Clock) {
			c.put(prof("a"))
			c.put(prof("b"))
			c.put(prof("c"))
			c.get("a") // a is used: b is now the least recent
			c.put(prof("d"))
		}, []string{"a", "c", "d"}},
		{"too old", func(c *profileCache, clk *testenv.Clock) {
			c.put(prof("a"))
			clk.Advance(30 * time.Second)
			c.put(prof("b"))
			clk.Advance(30*time.Second + time.Millisecond)
		}, []string{"b"}},
		{"a read does not make a copy younger", func(c *profileCache, clk *testenv.Clock) {
			c.put(prof("a"))
			clk.Advance(50 * time.Second)
			c.get("a")
			clk.Advance(11 * time.Second)
		}, nil},
		{"forgotten", func(c *profileCache, _ *testenv.Clock) {
			c.put(prof("a"))
			c.put(prof("b"))
			c.forget("a")
			c.forget("nobody")
		}, []string{"b"}},
		{"a profile without an id is not kept", func(c *profileCache, _ *testenv.Clock) {
			c.put(profileJSON{Name: "anonymous"})
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			c := newProfileCache(3, time.Minute, clk.Now)
			tc.run(c, clk)
			for _, id := range []string{"", "a", "b", "c", "d"} {
				p, _, ok := c.get(id)
				want := false
				for _, w := range tc.want {
					want = want || w == id
				}
				if ok != want {
					t.Errorf("get(%q): kept %v, want %v", id, ok, want)
				}
				if ok && p.ID != id {
					t.Errorf("get(%q) = %s's profile", id, p.ID)
				}
			}
		})
	}
	t.Run("age", func(t *testing.T) {
		clk := newClock()
		c := newProfileCache(3, time.Minute, clk.Now)
		c.put(prof("a"))
		clk.Advance(42 * time.Second)
		if p, age, ok := c.get("a"); !ok || age != 42*time.Second || p.Name != "name of a" {
			t.Fatalf("get = %+v, %s, %v; want a's profile, 42s old", p, age, ok)
		}
	})
}

// TestProfileCacheBounded: however many users pass through, the cache
// holds at most its bound.
func TestProfileCacheBounded(t *testing.T) {
	c := newProfileCache(100, time.Hour, newClock().Now)
	for i := range 10_000 {
		c.put(profileJSON{ID: fmt.Sprint("user-", i)})
		if c.size() > 100 {
			t.Fatalf("%d profiles kept, over the bound of 100", c.size())
		}
	}
	if _, _, ok := c.get("user-9999"); !ok {
		t.Fatal("the latest profile was not kept")
	}
	if _, _, ok := c.get("user-0"); ok {
		t.Fatal("the first of 10,000 profiles is still kept in a cache of 100")
	}
}
