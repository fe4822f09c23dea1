// Command fake-anthropic serves the fake Anthropic endpoints on loopback for the
// demo: it prints its base URL, and with --login FILE writes a fresh credentials
// file there first.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"

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
	log.Fatal(http.Serve(ln, srv.Handler()))
}
