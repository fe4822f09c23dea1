package authsync

import (
	"context"
	"encoding/json"
	"math"
	"testing"
	"time"
)

func TestClampTime(t *testing.T) {
	east := time.FixedZone("UTC+14", 14*3600)
	west := time.FixedZone("UTC-12", -12*3600)
	for _, tc := range []struct {
		name  string
		in    time.Time
		want  time.Time
		moved bool
	}{
		{"ordinary", time.UnixMilli(1767225600000), time.UnixMilli(1767225600000), false},
		{"zero", time.Time{}, time.Time{}, false},
		{"max int64 ms", time.UnixMilli(math.MaxInt64), reportTimeMax, true},
		{"min int64 ms", time.UnixMilli(math.MinInt64), reportTimeMin, true},
		{"first instant of year 10000", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), reportTimeMax, true},
		{"last instant of year 9999", reportTimeMax, reportTimeMax, false},
		{"year -1", time.Date(-1, 12, 31, 23, 59, 59, 0, time.UTC), reportTimeMin, true},
		// In range, but its own zone puts it in year 10000 (or -1): UTC.
		{"year 10000 only east of UTC", time.Date(9999, 12, 31, 12, 0, 0, 0, time.UTC).In(east), time.Date(9999, 12, 31, 12, 0, 0, 0, time.UTC), false},
		{"year -1 only west of UTC", time.Date(0, 1, 1, 6, 0, 0, 0, time.UTC).In(west), time.Date(0, 1, 1, 6, 0, 0, 0, time.UTC), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, moved := ClampTime(tc.in)
			if !got.Equal(tc.want) || moved != tc.moved {
				t.Errorf("ClampTime(%v) = %v, %v; want %v, %v", tc.in, got, moved, tc.want, tc.moved)
			}
			if _, err := json.Marshal(got); err != nil {
				t.Errorf("the clamped time does not encode: %v", err)
			}
		})
	}
}

// TestStatusOutOfRangeTimes: whatever expiresAt and refreshTokenExpiresAt the
// credentials file holds, the report encodes, and says which times it clamped.
func TestStatusOutOfRangeTimes(t *testing.T) {
	for _, tc := range []struct {
		name, expiresAt, deadline string
		wantOut                   map[string]string
	}{
		{"ordinary", "1767225600000", "1769817600000", nil},
		{"max int64", "9223372036854775807", "1769817600000",
			map[string]string{"expires_at": "9223372036854775807 ms since the epoch, after year 9999"}},
		{"min int64", "-9223372036854775808", "-9223372036854775808", map[string]string{
			"expires_at":     "-9223372036854775808 ms since the epoch, before year 0",
			"login_deadline": "-9223372036854775808 ms since the epoch, before year 0"}},
		{"4e18 deadline", "1767225600000", "4e18",
			map[string]string{"login_deadline": "4000000000000000000 ms since the epoch, after year 9999"}},
		{"1e300", "1e300", "1e300", nil}, // not a number to the credentials reader
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.writeCreds(credsFile(`{"accessToken":"sk-ant-oat01-status","refreshToken":"sk-ant-ort01-status","expiresAt":` +
				tc.expiresAt + `,"refreshTokenExpiresAt":` + tc.deadline + `}`))
			r := h.eng.Status(context.Background())
			data, err := json.Marshal(r)
			if err != nil {
				t.Fatalf("the report does not encode: %v", err)
			}
			var back Report
			if err := json.Unmarshal(data, &back); err != nil {
				t.Fatalf("the report does not decode: %v", err)
			}
			if len(r.OutOfRange) != len(tc.wantOut) {
				t.Errorf("OutOfRange = %v; want %v", r.OutOfRange, tc.wantOut)
			}
			for k, v := range tc.wantOut {
				if r.OutOfRange[k] != v {
					t.Errorf("OutOfRange[%s] = %q; want %q", k, r.OutOfRange[k], v)
				}
			}
		})
	}
}
