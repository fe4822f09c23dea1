package fleet

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func at(s int64) time.Time { return time.Unix(s, 0).UTC() }

func TestHealthRoundTrip(t *testing.T) {
	for _, h := range []Health{
		{},
		{Status: "OK"},
		{Label: "ws-01", Status: "OK", StatusAt: at(1700000000), BackupAt: at(1700000100), ExpiresAt: at(1700028000),
			Deadline: at(1702592000), Version: "1.4.0", Doc: DocMain},
		{Label: "gpu box 3 (rack B)", Status: "WARN", StatusAt: at(1), SetupExpires: at(1731536000), Version: "1.5.0-rc1+g1234abc", Doc: DocHosts},
		{Label: "ünïcode-wörkstätion", Status: "RECOVERED", Deadline: at(253402300799)},
	} {
		enc := h.Encode()
		if h == (Health{}) {
			if enc != "" {
				t.Errorf("Health{}.Encode() = %q; want \"\"", enc)
			}
			continue
		}
		got, err := ParseHealth(enc)
		if err != nil || got != h {
			t.Errorf("ParseHealth(%q) = %+v, %v; want %+v", enc, got, err, h)
		}
	}
}

func TestHealthEncodeFormat(t *testing.T) {
	h := Health{Label: "ws-01", Status: "OK", StatusAt: at(1700000000), ExpiresAt: at(1700028000), Version: "1.4.0", Doc: DocMain}
	if got, want := h.Encode(), "label=ws-01;status=OK;status_at=1700000000;expires_at=1700028000;version=1.4.0;doc=main"; got != want {
		t.Errorf("Encode() = %q; want %q", got, want)
	}
	// Separators and control characters never reach the value.
	h = Health{Label: "a;b=c\nd\x7f", Version: "1;2=3", Status: " OK "}
	if got, want := h.Encode(), "label=a_b_c_d_;status=OK;version=1_2_3"; got != want {
		t.Errorf("Encode() of hostile values = %q; want %q", got, want)
	}
}

// TestHealthSizeBound: the longest values still encode within Vault's 512
// bytes for one custom_metadata value, cut on a character boundary.
func TestHealthSizeBound(t *testing.T) {
	far := at(253402300799)
	h := Health{Label: strings.Repeat("é", 200), Status: strings.Repeat("S", 100), StatusAt: far, BackupAt: far, ExpiresAt: far,
		Deadline: far, SetupExpires: far, Version: strings.Repeat("v", 300), Doc: strings.Repeat("d", 100),
		Policy: strings.Repeat("p", 100), Reason: strings.Repeat("r", 1000)}
	enc := h.Encode()
	if len(enc) > MaxHealthLen {
		t.Fatalf("the largest Health encodes to %d bytes; want at most %d", len(enc), MaxHealthLen)
	}
	got, err := ParseHealth(enc)
	if err != nil {
		t.Fatal(err)
	}
	if got.Label != strings.Repeat("é", 32) || len(got.Version) != 64 || got.SetupExpires != far || len(got.Reason) != maxReason {
		t.Errorf("cut values: label %q (%d bytes), version %d bytes, reason %d bytes", got.Label, len(got.Label), len(got.Version), len(got.Reason))
	}
	if _, err := ParseHealth("status=OK;" + strings.Repeat("x", MaxHealthLen)); !errors.Is(err, ErrHealth) {
		t.Errorf("ParseHealth of %d bytes: %v; want ErrHealth", MaxHealthLen+10, err)
	}
}

// TestParseHealthForward: keys a newer agent adds, parts without "=", empty
// parts and unknown statuses are taken as they come; a known time that is
// not unix seconds is an error.
func TestParseHealthForward(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Health
		wantErr bool
	}{
		{"status=OK;future_key=1;another=x=y", Health{Status: "OK"}, false},
		{";;status=FAIL;;label=ws;junk;=v", Health{Status: "FAIL", Label: "ws"}, false},
		{"status=DEGRADED;doc=elsewhere", Health{Status: "DEGRADED", Doc: "elsewhere"}, false},
		{"status=OK;status_at=", Health{Status: "OK"}, false},
		{"status=OK; backup_at = 17 ", Health{Status: "OK", BackupAt: at(17)}, false},
		{"status=OK;status_at=soon", Health{}, true},
		{"status=OK;deadline=1.5", Health{}, true},
		{"status=OK;deadline=-1", Health{}, true},
		{"status=OK;deadline=99999999999999", Health{}, true},
		{"", Health{}, true},
		{"   ", Health{}, true},
	} {
		got, err := ParseHealth(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseHealth(%q) = %+v, %v; want %+v (error %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
		if err != nil && !errors.Is(err, ErrHealth) {
			t.Errorf("ParseHealth(%q): %v is not ErrHealth", tc.in, err)
		}
	}
}

func TestMetadataKey(t *testing.T) {
	k := MetadataKey("0a1b2c3d")
	if k != "host.0a1b2c3d" {
		t.Errorf("MetadataKey = %q", k)
	}
	if id, ok := HostOfKey(k); !ok || id != "0a1b2c3d" {
		t.Errorf("HostOfKey(%q) = %q, %v", k, id, ok)
	}
	for _, k := range []string{"host.", "owner_host", "hostx", "vaultwarden_user"} {
		if id, ok := HostOfKey(k); ok {
			t.Errorf("HostOfKey(%q) = %q, true; want false", k, id)
		}
	}
}
