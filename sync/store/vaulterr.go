package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"syscall"

	vault "github.com/hashicorp/vault/api"
)

// classify maps a Vault client error to one of our sentinels, in one line
// (Vault's multi-error text is flattened), with what to do when there is
// something to do: a refused token names the commands that replace it, a
// configuration mistake names the setting to fix. Vault's own words never
// contain the token; a URL's query, if any, is dropped.
func (v *Vault) classify(op string, err error) error {
	var re *vault.ResponseError
	if errors.As(err, &re) {
		msg := flatten(strings.Join(re.Errors, "\n"))
		switch {
		case re.StatusCode == 403:
			return fmt.Errorf("%s: %w (403: %s); the token was revoked, expired or lacks its policy: %s", op, ErrForbidden, msg, ReprovisionHint(v.cfg.User))
		case re.StatusCode == 400 && strings.Contains(msg, "check-and-set"):
			return fmt.Errorf("%s: %w (%s)", op, ErrConflict, msg)
		case re.StatusCode == 400 && strings.Contains(strings.ToLower(msg), "http request to an https server"):
			return fmt.Errorf("%s: %w: VAULT_ADDR=%s speaks http to an https listener; set VAULT_ADDR=https://%s", op, ErrMisconfigured, v.client.Address(), hostOf(v.client.Address()))
		case re.StatusCode >= 500 || re.StatusCode == 429:
			return fmt.Errorf("%s: %w (%d: %s)", op, ErrUnreachable, re.StatusCode, msg)
		default:
			return fmt.Errorf("%s: vault answered %d: %s", op, re.StatusCode, msg)
		}
	}
	if fix := v.misconfigured(err); fix != "" {
		return fmt.Errorf("%s: %w: %s", op, ErrMisconfigured, fix)
	}
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ECONNREFUSED) {
		reason := err.Error()
		if ue != nil {
			reason = ue.Err.Error()
		}
		return fmt.Errorf("%s: %w (%s)", op, ErrUnreachable, flatten(reason))
	}
	return fmt.Errorf("%s: %s", op, flatten(err.Error()))
}

// ReprovisionHint is what to do about a Vault token that was refused.
func ReprovisionHint(user string) string {
	return fmt.Sprintf("ask your admin to run `claude-auth-sync provision` (it installs a new token), then `systemctl start claude-auth-sync@%s.service` (a pass now); a running agent also picks the new token up by itself", user)
}

// misconfigured says what to fix when err is a mistake in the settings rather
// than an outage: retrying would only repeat it.
func (v *Vault) misconfigured(err error) string {
	addr := v.client.Address()
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return fmt.Sprintf("VAULT_ADDR=%s speaks https to a listener that speaks plain http; use http://%s if that is intended, or fix the listener's TLS", addr, hostOf(addr))
	}
	var ua x509.UnknownAuthorityError
	var cv *tls.CertificateVerificationError
	if errors.As(err, &ua) || (errors.As(err, &cv) && !isHostname(err)) {
		return fmt.Sprintf("the certificate of %s is signed by a CA this host does not trust: set VAULT_CACERT (or VAULT_CAPATH) to the CA that signed it", addr)
	}
	if isHostname(err) {
		return fmt.Sprintf("the certificate of %s is not valid for that name (%s): use the name it was issued for in VAULT_ADDR, or set VAULT_TLS_SERVER_NAME", addr, flatten(err.Error()))
	}
	var ci x509.CertificateInvalidError
	if errors.As(err, &ci) {
		return fmt.Sprintf("the certificate of %s is not valid (%s): renew it on the server or fix VAULT_CACERT", addr, flatten(ci.Error()))
	}
	var ae tls.AlertError
	if errors.As(err, &ae) {
		return fmt.Sprintf("%s refused the TLS handshake (%s): check VAULT_CLIENT_CERT/VAULT_CLIENT_KEY and the listener's TLS settings", addr, ae.Error())
	}
	msg := err.Error()
	if strings.Contains(msg, "unsupported protocol scheme") || strings.Contains(msg, "no Host in request URL") ||
		strings.Contains(msg, "invalid port") || strings.Contains(msg, "invalid URL") {
		return fmt.Sprintf("VAULT_ADDR=%q is not an address: want https://host:8200", addr)
	}
	return ""
}

func isHostname(err error) bool {
	var he x509.HostnameError
	return errors.As(err, &he)
}

func hostOf(addr string) string {
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		return u.Host
	}
	return addr
}

// flatten makes one line of Vault's multi-line text: hashicorp/go-multierror's
// "2 errors occurred:\n\t* a\n\t* b" becomes "a; b".
func flatten(s string) string {
	var parts []string
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		line = strings.TrimSpace(strings.TrimPrefix(line, "* "))
		if line == "" || multiErrHead.MatchString(line) {
			continue
		}
		parts = append(parts, line)
	}
	return strings.Join(parts, "; ")
}

var multiErrHead = regexp.MustCompile(`^\d+ errors? occurred:$`)

// ClassifyError maps an error of a request made with c as the store maps its
// own (ErrUnreachable, ErrMisconfigured with the setting to fix, ErrConflict),
// in one line. A 403 gets the agent's hint (re-provision this user's token):
// callers with another kind of token say their own.
func ClassifyError(c *vault.Client, op string, err error) error {
	return (&Vault{client: c}).classify(op, err)
}
