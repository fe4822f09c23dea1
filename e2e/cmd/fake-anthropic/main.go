// Command fake-anthropic serves the fake Anthropic endpoints on loopback for the
// demo: it prints its base URL, and with --login FILE writes a fresh credentials
// file there first. Two demo endpoints drive it from a script:
//
//	POST /demo/login?expires_in=10s  a fresh login with that lifetime (and that
//	                                 lifetime for every refresh from now on),
//	                                 written to FILE by rename, as Claude does
//	GET  /demo/counters              refreshes and invalid_grants so far (JSON)
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (loopback)")
	login := flag.String("login", "", "write a fresh credentials file here")
	urlFile := flag.String("url-file", "", "write the base URL to this file once listening")
	flag.Parse()
	srv := fakeanthropic.New()
	if *login != "" {
		if err := os.MkdirAll(filepath.Dir(*login), 0o700); err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(*login, fakeanthropic.CredentialsJSON(srv.Issue()), 0o600); err != nil {
			log.Fatal(err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", srv.Handler())
	mux.HandleFunc("POST /demo/login", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("expires_in"))
		if err != nil || d <= 0 || *login == "" {
			http.Error(w, "want ?expires_in=<duration> and --login", http.StatusBadRequest)
			return
		}
		srv.SetExpiresIn(d)
		tmp := *login + ".demo-tmp"
		if err := os.WriteFile(tmp, fakeanthropic.CredentialsJSON(srv.Issue()), 0o600); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if err := os.Rename(tmp, *login); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /demo/counters", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(srv.Counters())
	})
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	if *urlFile != "" {
		if err := os.WriteFile(*urlFile, []byte(url+"\n"), 0o600); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println(url)
	log.Fatal(http.Serve(ln, mux))
}
