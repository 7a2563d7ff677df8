// Command sextant-kube-apiserver runs a real kube-apiserver with an embedded etcd in one process,
// for Sextant's tests: 127.0.0.1 only, RBAC on, an admin and a restricted identity, no kubelet
// and no controllers.
//
//	sextant-kube-apiserver --port PORT --data-dir DIR [--kubeconfig PATH]
//	    [--restricted-kubeconfig PATH] [-- extra kube-apiserver flags]
//
// DIR holds the etcd data (DIR/etcd, reached over the unix socket DIR/etcd.sock) and the
// certificates and tokens (DIR/pki). Both survive a restart with the same DIR, so the
// kubeconfigs stay valid and the objects stay. The kubeconfigs are removed at start and written
// once /readyz answers 200: a kubeconfig on disk means the server is ready. SIGTERM or SIGINT
// shuts the API server down gracefully, then etcd; exit status 0.
//
// Identities (see README.md):
//   - admin: user "sextant-admin" in group "system:masters" (client certificate in the admin
//     kubeconfig; bearer token in DIR/pki/admin.token);
//   - restricted: user "sextant-limited" in no group (client certificate in the restricted
//     kubeconfig; bearer token in DIR/pki/restricted.token). RBAC gives it nothing until a test
//     binds a role to it.
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

const (
	host           = "127.0.0.1"
	adminUser      = "sextant-admin"
	adminGroup     = "system:masters"
	restrictedUser = "sextant-limited"
	// Unix sockets are limited to 108 bytes, terminating NUL included.
	maxSocketPath = 107
)

func main() {
	os.Exit(run())
}

type options struct {
	port                 int
	dataDir              string
	kubeconfig           string
	restrictedKubeconfig string
	extraArgs            []string
}

func parseFlags() (options, error) {
	var o options
	fs := flag.NewFlagSet("sextant-kube-apiserver", flag.ContinueOnError)
	fs.IntVar(&o.port, "port", 0, "secure port on 127.0.0.1 (required)")
	fs.StringVar(&o.dataDir, "data-dir", "", "folder for etcd data, certificates and tokens (required)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "admin kubeconfig to write (default DATA_DIR/admin.kubeconfig)")
	fs.StringVar(&o.restrictedKubeconfig, "restricted-kubeconfig", "",
		"kubeconfig of "+restrictedUser+" to write (default DATA_DIR/restricted.kubeconfig)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: sextant-kube-apiserver --port PORT --data-dir DIR "+
			"[--kubeconfig PATH] [--restricted-kubeconfig PATH] [-- kube-apiserver flags]\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		return o, err
	}
	o.extraArgs = fs.Args()
	if o.port <= 0 || o.port > 65535 || o.dataDir == "" {
		fs.Usage()
		return o, errors.New("--port and --data-dir are required")
	}
	var err error
	if o.dataDir, err = filepath.Abs(o.dataDir); err != nil {
		return o, err
	}
	if o.kubeconfig == "" {
		o.kubeconfig = filepath.Join(o.dataDir, "admin.kubeconfig")
	}
	if o.restrictedKubeconfig == "" {
		o.restrictedKubeconfig = filepath.Join(o.dataDir, "restricted.kubeconfig")
	}
	return o, nil
}

func run() int {
	o, err := parseFlags()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		logf("error: %v", err)
		return 2
	}
	for _, path := range []string{o.kubeconfig, o.restrictedKubeconfig} {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			logf("error: %v", err)
			return 1
		}
	}
	pki, err := ensurePKI(filepath.Join(o.dataDir, "pki"))
	if err != nil {
		logf("error: certificates: %v", err)
		return 1
	}

	// The command installs the SIGTERM/SIGINT handler (it may be installed only once); its
	// context ends on the first signal, and a second signal exits at once.
	command := app.NewAPIServerCommand()
	ctx := command.Context()

	started := time.Now()
	etcd, etcdURL, err := startEtcd(o.dataDir)
	if err != nil {
		logf("error: etcd: %v", err)
		return 1
	}
	defer func() {
		etcd.Close()
		logf("etcd stopped")
	}()
	logf("etcd ready at %s after %s", etcdURL, time.Since(started).Round(time.Millisecond))

	command.SetArgs(append(apiServerArgs(o, pki, etcdURL), o.extraArgs...))
	apiserverDone := make(chan error, 1)
	go func() { apiserverDone <- command.Execute() }()

	ready := make(chan error, 1)
	go func() { ready <- waitReady(ctx, o, pki, started) }()

	for {
		select {
		case err := <-ready:
			if err != nil {
				logf("error: %v", err)
				return 1
			}
			ready = nil
		case err := <-apiserverDone:
			if err != nil {
				logf("error: kube-apiserver: %v", err)
				return 1
			}
			if ctx.Err() == nil {
				logf("error: kube-apiserver stopped without a signal")
				return 1
			}
			logf("kube-apiserver stopped")
			return 0
		case err := <-etcd.Err():
			logf("error: etcd: %v", err)
			return 1
		}
	}
}

func logf(format string, args ...any) {
	klog.Infof("sextant-kube-apiserver: "+format, args...)
	klog.Flush()
}

func apiServerArgs(o options, pki pkiFiles, etcdURL string) []string {
	return []string{
		"--bind-address=" + host,
		"--advertise-address=" + host,
		"--secure-port=" + strconv.Itoa(o.port),
		"--tls-cert-file=" + pki.servingCert,
		"--tls-private-key-file=" + pki.servingKey,
		"--client-ca-file=" + pki.caCert,
		"--token-auth-file=" + pki.tokens,
		"--authorization-mode=RBAC",
		"--etcd-servers=" + etcdURL,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki.serviceAccountKey,
		"--service-account-signing-key-file=" + pki.serviceAccountKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		// The endpoints of the "kubernetes" Service would be 127.0.0.1, which Endpoints reject.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	}
}

// --- etcd ------------------------------------------------------------------------------------

func startEtcd(dataDir string) (*embed.Etcd, string, error) {
	socket := filepath.Join(dataDir, "etcd.sock")
	if len(socket) > maxSocketPath {
		return nil, "", fmt.Errorf("socket path %s is longer than %d bytes: use a shorter --data-dir",
			socket, maxSocketPath)
	}
	cfg := embed.NewConfig()
	cfg.Name = "sextant"
	cfg.Dir = filepath.Join(dataDir, "etcd")
	// Test data is disposable: trade durability for speed, as for the tests' PostgreSQL.
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "warn"
	// NewConfig leaves this at 0, which logs every request as slow.
	cfg.WarningUnaryRequestDuration = embed.DefaultWarningUnaryRequestDuration
	// The only client, this process's API server, comes in over a unix socket: no TCP port, and
	// no port to pick. etcd insists on a peer listener even for a single member: 127.0.0.1, port
	// chosen by the kernel. The advertised URLs must look like host:port but are never dialled
	// (there is no other member, and the API server's etcd client does not sync endpoints).
	client := url.URL{Scheme: "unix", Path: socket}
	peer := url.URL{Scheme: "http", Host: net.JoinHostPort(host, "0")}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{{Scheme: "unix", Host: "localhost:0"}}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, "", errors.New("not ready after 60s")
	}
	return e, "unix://" + socket, nil
}

// --- readiness and kubeconfigs ---------------------------------------------------------------

func waitReady(ctx context.Context, o options, pki pkiFiles, started time.Time) error {
	server := "https://" + net.JoinHostPort(host, strconv.Itoa(o.port))
	client, err := pki.httpClient()
	if err != nil {
		return err
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		if readyz(ctx, client, server+"/readyz") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := writeKubeconfig(o.kubeconfig, server, pki, pki.adminCert, pki.adminKey, adminUser); err != nil {
		return err
	}
	err = writeKubeconfig(o.restrictedKubeconfig, server, pki, pki.restrictedCert, pki.restrictedKey,
		restrictedUser)
	if err != nil {
		return err
	}
	logf("ready at %s after %s; admin kubeconfig %s, restricted kubeconfig %s", server,
		time.Since(started).Round(time.Millisecond), o.kubeconfig, o.restrictedKubeconfig)
	return nil
}

func readyz(ctx context.Context, client *http.Client, url string) bool {
	request, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	response, err := client.Do(request)
	if err != nil {
		return false
	}
	response.Body.Close()
	return response.StatusCode == http.StatusOK
}

func writeKubeconfig(path, server string, pki pkiFiles, certFile, keyFile, user string) error {
	ca, err := os.ReadFile(pki.caCert)
	if err != nil {
		return err
	}
	cert, err := os.ReadFile(certFile)
	if err != nil {
		return err
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	const name = "sextant-test"
	config := clientcmdapi.NewConfig()
	config.Clusters[name] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	config.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	config.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: user, Namespace: "default"}
	config.CurrentContext = name
	data, err := clientcmd.Write(*config)
	if err != nil {
		return err
	}
	return writeAtomically(path, data, 0o600)
}

// --- certificates and tokens -----------------------------------------------------------------

type pkiFiles struct {
	caCert, caKey                 string
	servingCert, servingKey       string
	adminCert, adminKey           string
	restrictedCert, restrictedKey string
	adminToken, restrictedToken   string
	tokens, serviceAccountKey     string
}

func (p pkiFiles) httpClient() (*http.Client, error) {
	ca, err := os.ReadFile(p.caCert)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("no certificate in %s", p.caCert)
	}
	admin, err := tls.LoadX509KeyPair(p.adminCert, p.adminKey)
	if err != nil {
		return nil, err
	}
	transport := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{admin}},
	}
	return &http.Client{Transport: transport, Timeout: 2 * time.Second}, nil
}

// ensurePKI creates the CA, the certificates, the service-account key and the tokens in dir,
// unless they are there from an earlier start.
func ensurePKI(dir string) (pkiFiles, error) {
	p := pkiFiles{
		caCert: filepath.Join(dir, "ca.crt"), caKey: filepath.Join(dir, "ca.key"),
		servingCert: filepath.Join(dir, "apiserver.crt"), servingKey: filepath.Join(dir, "apiserver.key"),
		adminCert: filepath.Join(dir, "admin.crt"), adminKey: filepath.Join(dir, "admin.key"),
		restrictedCert: filepath.Join(dir, "restricted.crt"), restrictedKey: filepath.Join(dir, "restricted.key"),
		adminToken: filepath.Join(dir, "admin.token"), restrictedToken: filepath.Join(dir, "restricted.token"),
		tokens: filepath.Join(dir, "tokens.csv"), serviceAccountKey: filepath.Join(dir, "service-account.key"),
	}
	// tokens.csv is written last: when it exists, everything before it does too.
	if _, err := os.Stat(p.tokens); err == nil {
		return p, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return p, err
	}
	caKey, err := newKey()
	if err != nil {
		return p, err
	}
	caTemplate := template(pkix.Name{CommonName: "sextant-test-ca"})
	caTemplate.IsCA = true
	caTemplate.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	ca, err := sign(caTemplate, caTemplate, caKey, caKey)
	if err != nil {
		return p, err
	}
	if err := writeCert(p.caCert, ca); err != nil {
		return p, err
	}
	if err := writeKey(p.caKey, caKey); err != nil {
		return p, err
	}

	serving := template(pkix.Name{CommonName: "kube-apiserver"})
	serving.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	serving.IPAddresses = []net.IP{net.ParseIP(host), net.ParseIP("10.96.0.1")}
	serving.DNSNames = []string{"localhost", "kubernetes", "kubernetes.default",
		"kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	clients := []struct {
		template  *x509.Certificate
		cert, key string
	}{
		{serving, p.servingCert, p.servingKey},
		{clientTemplate(adminUser, adminGroup), p.adminCert, p.adminKey},
		{clientTemplate(restrictedUser), p.restrictedCert, p.restrictedKey},
	}
	for _, c := range clients {
		key, err := newKey()
		if err != nil {
			return p, err
		}
		der, err := sign(c.template, caTemplate, key, caKey)
		if err != nil {
			return p, err
		}
		if err := writeCert(c.cert, der); err != nil {
			return p, err
		}
		if err := writeKey(c.key, key); err != nil {
			return p, err
		}
	}

	saKey, err := newKey()
	if err != nil {
		return p, err
	}
	if err := writeKey(p.serviceAccountKey, saKey); err != nil {
		return p, err
	}

	adminToken, restrictedToken := randomToken(), randomToken()
	if err := writeAtomically(p.adminToken, []byte(adminToken+"\n"), 0o600); err != nil {
		return p, err
	}
	if err := writeAtomically(p.restrictedToken, []byte(restrictedToken+"\n"), 0o600); err != nil {
		return p, err
	}
	// token,user,uid[,"group1,group2"]
	csv := fmt.Sprintf("%s,%s,%s,%s\n%s,%s,%s\n", adminToken, adminUser, adminUser, adminGroup,
		restrictedToken, restrictedUser, restrictedUser)
	return p, writeAtomically(p.tokens, []byte(csv), 0o600)
}

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func template(subject pkix.Name) *x509.Certificate {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err)
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
}

// clientTemplate: the API server takes the user name from the CN and the groups from O.
func clientTemplate(user string, groups ...string) *x509.Certificate {
	c := template(pkix.Name{CommonName: user, Organization: groups})
	c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return c
}

func sign(c, parent *x509.Certificate, key *ecdsa.PrivateKey, parentKey crypto.Signer) ([]byte, error) {
	return x509.CreateCertificate(rand.Reader, c, parent, key.Public(), parentKey)
}

func writeCert(path string, der []byte) error {
	return writeAtomically(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writeAtomically(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

func randomToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func writeAtomically(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
