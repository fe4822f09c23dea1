package claudecli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Proxy is a TLS-intercepting HTTP CONNECT proxy on loopback. Every tunnel,
// whatever host it names, ends at an in-process TLS server that presents a
// certificate for that host signed by a throw-away CA and serves the handler
// given to StartProxy. It never dials out: nothing a client sends through it
// leaves the machine.
type Proxy struct {
	// Addr is the proxy's host:port on 127.0.0.1.
	Addr string
	// CAFile is the throw-away CA certificate (PEM), for NODE_EXTRA_CA_CERTS.
	CAFile string

	dir     string
	ln      net.Listener
	front   *http.Server
	back    *http.Server
	tunnels *chanListener
	caCert  *x509.Certificate
	caKey   *ecdsa.PrivateKey

	mu    sync.Mutex
	certs map[string]*tls.Certificate
	hosts []string
}

// StartProxy starts a proxy serving handler for every CONNECT tunnel (and for
// plain absolute-URL proxy requests). Close it when done.
func StartProxy(handler http.Handler) (*Proxy, error) {
	dir, err := os.MkdirTemp("", "claudecli-proxy-")
	if err != nil {
		return nil, err
	}
	p := &Proxy{dir: dir, certs: map[string]*tls.Certificate{}, CAFile: filepath.Join(dir, "ca.pem")}
	fail := func(err error) (*Proxy, error) {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("claudecli: proxy: %w", err)
	}
	if err := p.makeCA(); err != nil {
		return fail(err)
	}
	p.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	p.Addr = p.ln.Addr().String()
	p.tunnels = newChanListener(p.ln.Addr())
	quiet := log.New(io.Discard, "", 0) // e.g. handshakes from clients that do not trust the CA
	p.back = &http.Server{Handler: handler, ReadHeaderTimeout: 30 * time.Second, ErrorLog: quiet}
	p.front = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect {
			p.connect(w, r)
			return
		}
		if r.URL.IsAbs() { // plain-HTTP proxying: serve it too, never forward
			p.record(r.URL.Host)
			handler.ServeHTTP(w, r)
			return
		}
		http.Error(w, "claudecli proxy: only CONNECT or absolute URLs", http.StatusBadRequest)
	}), ReadHeaderTimeout: 30 * time.Second, ErrorLog: quiet}
	go func() { _ = p.front.Serve(p.ln) }()
	go func() { _ = p.back.Serve(p.tunnels) }()
	return p, nil
}

// URL is the proxy's URL, for HTTPS_PROXY.
func (p *Proxy) URL() string { return "http://" + p.Addr }

// Env is what a client needs to use the proxy and trust its CA. The native
// builds are Bun executables (2.1.124: Bun 1.3.14, 2.1.332: Bun 1.4.6); each of
// NODE_EXTRA_CA_CERTS and SSL_CERT_FILE alone was checked to make them trust
// the CA, and the cli.js builds run on Node, which reads NODE_EXTRA_CA_CERTS.
// Both are set. Loopback addresses bypass the proxy (NO_PROXY), so
// ANTHROPIC_BASE_URL=http://127.0.0.1:PORT is reached directly.
func (p *Proxy) Env() []string {
	noProxy := "127.0.0.1,localhost,::1"
	return []string{
		"HTTPS_PROXY=" + p.URL(), "https_proxy=" + p.URL(),
		"NO_PROXY=" + noProxy, "no_proxy=" + noProxy,
		"NODE_EXTRA_CA_CERTS=" + p.CAFile, "SSL_CERT_FILE=" + p.CAFile,
	}
}

// Hosts lists the host:port of every CONNECT tunnel (and absolute-URL request)
// the proxy has seen, in order.
func (p *Proxy) Hosts() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.hosts...)
}

// Close stops the proxy, ends open tunnels and removes the CA file.
func (p *Proxy) Close() error {
	err := p.front.Close()
	_ = p.tunnels.Close()
	if e := p.back.Close(); err == nil {
		err = e
	}
	_ = os.RemoveAll(p.dir)
	return err
}

func (p *Proxy) record(host string) {
	p.mu.Lock()
	p.hosts = append(p.hosts, host)
	p.mu.Unlock()
}

func (p *Proxy) connect(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	p.record(host)
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "no hijack", http.StatusInternalServerError)
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection Established\r\n\r\n"); err != nil {
		_ = conn.Close()
		return
	}
	var raw net.Conn = conn
	if n := brw.Reader.Buffered(); n > 0 { // the client spoke before our 200
		raw = &prefixConn{Conn: conn, r: io.MultiReader(io.LimitReader(brw.Reader, int64(n)), conn)}
	}
	name, _, err := net.SplitHostPort(host)
	if err != nil {
		name = host
	}
	tc := tls.Server(raw, &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			n := hello.ServerName
			if n == "" {
				n = name
			}
			return p.leaf(n)
		},
	})
	if !p.tunnels.push(tc) {
		_ = tc.Close()
	}
}

// leaf returns (minting once) a certificate for name signed by the CA.
func (p *Proxy) leaf(name string) (*tls.Certificate, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.certs[name]; ok {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		return nil, err
	}
	c := &tls.Certificate{Certificate: [][]byte{der, p.caCert.Raw}, PrivateKey: key}
	p.certs[name] = c
	return c, nil
}

func (p *Proxy) makeCA() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "claude-auth-sync test CA", Organization: []string{"claude-auth-sync e2e"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	if p.caCert, err = x509.ParseCertificate(der); err != nil {
		return err
	}
	p.caKey = key
	return os.WriteFile(p.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n.Add(n, big.NewInt(1))
}

// prefixConn replays bytes already buffered by the CONNECT parser.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// chanListener is a net.Listener fed with tunnelled connections.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
