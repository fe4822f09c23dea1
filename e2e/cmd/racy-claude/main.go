// Command racy-claude simulates an old Claude Code process that refreshes
// without any lock: it reads the credentials file, and when the token is within
// --threshold of expiry it refreshes with the refresh token it read and writes
// the result in place. A loser of that race gets invalid_grant and, as Claude
// does, persists a dead login (refreshToken ""): the logout this project exists
// to prevent. Between refreshes it makes inference calls with the access token.
//
// --barrier FILE makes the race deterministic: after reading the file the
// process waits for FILE to exist before it POSTs.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

type login struct {
	AccessToken  string `json:"accessToken"`
	RefreshToken string `json:"refreshToken"`
	ExpiresAt    int64  `json:"expiresAt"`
}

// waitForOtherWrite waits (bounded) until the file no longer holds sent.
func waitForOtherWrite(path, sent string) {
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		data, err := os.ReadFile(path)
		if err == nil && !bytes.Contains(data, []byte(sent)) {
			return
		}
	}
}

func main() {
	creds := flag.String("creds", "", "credentials file")
	base := flag.String("api", "", "fake Anthropic base URL")
	threshold := flag.Duration("threshold", 5*time.Minute, "refresh when less than this is left")
	duration := flag.Duration("for", 10*time.Second, "how long to run")
	barrier := flag.String("barrier", "", "wait for this file before POSTing a refresh")
	once := flag.Bool("once", false, "stop after the first refresh attempt")
	loserLast := flag.Bool("loser-writes-last", false, "on invalid_grant, wait for the winner's write, then write the dead login over it (the losing order, made certain)")
	flag.Parse()
	stats := struct{ Refreshes, InvalidGrant, Logouts, CallsOK, CallsFailed int }{}
	end := time.Now().Add(*duration)
	for time.Now().Before(end) {
		var f map[string]json.RawMessage
		data, err := os.ReadFile(*creds)
		if err != nil || json.Unmarshal(data, &f) != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		var l login
		_ = json.Unmarshal(f["claudeAiOauth"], &l)
		if l.RefreshToken == "" {
			stats.Logouts++
			break // logged out: a real user would have to log in again
		}
		if time.Until(time.UnixMilli(l.ExpiresAt)) < *threshold {
			if *barrier != "" {
				for {
					if _, err := os.Stat(*barrier); err == nil {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			body, _ := json.Marshal(map[string]string{"grant_type": "refresh_token", "refresh_token": l.RefreshToken, "client_id": "x"})
			resp, err := http.Post(*base+"/v1/oauth/token", "application/json", bytes.NewReader(body))
			if err == nil {
				var r struct {
					AccessToken  string `json:"access_token"`
					RefreshToken string `json:"refresh_token"`
					ExpiresIn    int64  `json:"expires_in"`
					Error        string `json:"error"`
				}
				json.NewDecoder(resp.Body).Decode(&r)
				resp.Body.Close()
				if r.Error == "invalid_grant" {
					stats.InvalidGrant++
					if *loserLast {
						waitForOtherWrite(*creds, l.RefreshToken)
					}
					l = login{}
				} else {
					stats.Refreshes++
					l = login{AccessToken: r.AccessToken, RefreshToken: r.RefreshToken, ExpiresAt: time.Now().Add(time.Duration(r.ExpiresIn) * time.Second).UnixMilli()}
				}
				o, _ := json.Marshal(l)
				f["claudeAiOauth"] = o
				out, _ := json.Marshal(f)
				// In place, no lock, no rename: what an old Claude did.
				os.WriteFile(*creds, out, 0o600)
			}
			if *once {
				break
			}
			continue
		}
		req, _ := http.NewRequest("POST", *base+"/v1/messages", bytes.NewReader([]byte(`{"model":"claude-haiku-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`)))
		req.Header.Set("Authorization", "Bearer "+l.AccessToken)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			if resp.StatusCode == 200 {
				stats.CallsOK++
			} else {
				stats.CallsFailed++
			}
			resp.Body.Close()
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, _ := json.Marshal(stats)
	if dir := os.Getenv("RACY_STATS_DIR"); dir != "" {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("racy-%d.json", os.Getpid())), out, 0o600)
	}
	fmt.Println(string(out))
}
