// Command controlplane runs a real, local Kubernetes control plane for tests and
// `blooio-operator dev`: embedded etcd, kube-apiserver (upstream code, imported as a
// Go module) and a kube-controller-manager restricted to the garbage-collector and
// namespace controllers, run as a child process of this same binary.
//
//	controlplane --work-dir DIR [--ready-timeout 120s] [--controllers LIST] [--node]
//	             [-- extra kube-apiserver flags]
//	controlplane controller-manager --kubeconfig FILE [--controllers LIST]   (internal)
//
// --controllers replaces the child's controller list (for a node: deployment,
// replicaset, node-lifecycle, serviceaccount, ...). --node prepares the API server for
// the local node of tests/node: ServiceAccount admission stays on, kubelets are reached
// with a client certificate, and the controller-manager publishes kube-root-ca.crt.
//
// DIR receives the PKI, etcd data, `kubeconfig` and `info.json` (both written
// atomically). SIGTERM stops everything.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	cmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "time/tzdata"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "controller-manager" {
		os.Exit(runControllerManager(os.Args[2:]))
	}
	os.Exit(runControlPlane(os.Args[1:]))
}

// defaultControllers is what the tests need: ownerReference cascades and namespace deletion.
const defaultControllers = "garbage-collector-controller,namespace-controller"

func runControllerManager(args []string) int {
	fs := flag.NewFlagSet("controller-manager", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the API server")
	controllers := fs.String("controllers", defaultControllers, "kube-controller-manager --controllers")
	rootCA := fs.String("root-ca-file", "", "CA published to pods as kube-root-ca.crt (node mode)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cmArgs := []string{
		"--kubeconfig=" + *kubeconfig,
		"--authentication-kubeconfig=" + *kubeconfig,
		"--authorization-kubeconfig=" + *kubeconfig,
		"--controllers=" + *controllers,
		"--leader-elect=false",
		"--secure-port=0",
		"--concurrent-gc-syncs=5",
		"--v=1",
	}
	if *rootCA != "" {
		cmArgs = append(cmArgs, "--root-ca-file="+*rootCA)
	}
	cmd := cmapp.NewControllerManagerCommand()
	cmd.SetArgs(cmArgs)
	return cli.Run(cmd)
}

func runControlPlane(args []string) int {
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	workDir := fs.String("work-dir", "", "directory for PKI, etcd data, kubeconfig and info.json (required)")
	readyTimeout := fs.Duration("ready-timeout", 120*time.Second, "how long to wait for etcd and the API server")
	noCM := fs.Bool("no-controller-manager", false, "do not start the controller-manager child")
	controllers := fs.String("controllers", defaultControllers, "controllers the controller-manager child runs")
	node := fs.Bool("node", false, "serve a real node (tests/node): ServiceAccount admission on, a "+
		"client certificate for kubelets, kube-root-ca.crt published to pods")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *workDir == "" {
		fmt.Fprintln(os.Stderr, "--work-dir is required")
		return 2
	}
	passThrough := fs.Args()
	dir, err := filepath.Abs(*workDir)
	if err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(err)
	}
	// A restart on an existing work dir reuses the PKI, token and ports, so clients
	// holding the kubeconfig reconnect to the same server with the same credentials.
	pki, err := loadOrWritePKI(filepath.Join(dir, "pki"))
	if err != nil {
		return fail(err)
	}
	ports, err := loadOrPickPorts(filepath.Join(dir, "ports.json"))
	if err != nil {
		return fail(err)
	}
	etcdClient := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	etcd, err := startEtcd(filepath.Join(dir, "etcd"), etcdClient, fmt.Sprintf("http://127.0.0.1:%d", ports[1]), *readyTimeout)
	if err != nil {
		return fail(fmt.Errorf("etcd: %w", err))
	}
	defer etcd.Close()

	server := fmt.Sprintf("https://127.0.0.1:%d", ports[2])
	kubeconfigPath := filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfigPath, server, pki); err != nil {
		return fail(err)
	}
	info := map[string]any{
		"server":     server,
		"caFile":     pki.caFile,
		"token":      pki.token,
		"kubeconfig": kubeconfigPath,
		"pid":        os.Getpid(),
		"etcd":       etcdClient,
	}
	if err := writeJSONAtomic(filepath.Join(dir, "info.json"), info); err != nil {
		return fail(err)
	}

	apiArgs := []string{
		"--etcd-servers=" + etcdClient,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports[2]),
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--tls-cert-file=" + pki.serverCert,
		"--tls-private-key-file=" + pki.serverKey,
		"--client-ca-file=" + pki.caFile,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki.saKey,
		"--service-account-signing-key-file=" + pki.saKey,
		"--api-audiences=https://kubernetes.default.svc.cluster.local",
		"--authorization-mode=RBAC",
		"--token-auth-file=" + pki.tokenFile,
		"--allow-privileged=true",
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--v=1",
	}
	if *node {
		// Pods get their ServiceAccount token volume; the API server reaches kubelets
		// (logs, exec) at their InternalIP with a client certificate of our CA.
		apiArgs = append(apiArgs,
			"--kubelet-client-certificate="+pki.kubeletClientCert,
			"--kubelet-client-key="+pki.kubeletClientKey,
			"--kubelet-preferred-address-types=InternalIP")
	} else {
		// No ServiceAccount controller in the default set, so no default ServiceAccounts.
		apiArgs = append(apiArgs, "--disable-admission-plugins=ServiceAccount")
	}
	apiArgs = append(apiArgs, passThrough...)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if !*noCM {
		cmArgs := []string{"--kubeconfig", kubeconfigPath, "--controllers", *controllers}
		if *node {
			cmArgs = append(cmArgs, "--root-ca-file", pki.caFile)
		}
		go superviseControllerManager(ctx, server, pki, cmArgs, *readyTimeout)
	}

	cmd := apiserverapp.NewAPIServerCommand()
	cmd.SetArgs(apiArgs)
	code := cli.Run(cmd)
	cancel()
	return code
}

// superviseControllerManager starts `controlplane controller-manager` once the API
// server is ready, as a child that dies with us (Pdeathsig), and restarts it if it exits.
func superviseControllerManager(ctx context.Context, server string, pki *pkiFiles, cmArgs []string, timeout time.Duration) {
	if err := waitReady(ctx, server, pki, timeout); err != nil {
		fmt.Fprintln(os.Stderr, "controller-manager not started:", err)
		return
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "controller-manager not started:", err)
		return
	}
	for ctx.Err() == nil {
		child := exec.CommandContext(ctx, self, append([]string{"controller-manager"}, cmArgs...)...)
		child.Stdout = os.Stderr
		child.Stderr = os.Stderr
		child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		_ = child.Run()
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

func waitReady(ctx context.Context, server string, pki *pkiFiles, timeout time.Duration) error {
	caPEM, err := os.ReadFile(pki.caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, server+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+pki.token)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("API server not ready within %s", timeout)
}

func startEtcd(dataDir, clientURL, peerURL string, timeout time.Duration) (*embed.Etcd, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Name = "controlplane"
	cfg.Dir = dataDir
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "error"
	cu, err := parseURL(clientURL)
	if err != nil {
		return nil, err
	}
	pu, err := parseURL(peerURL)
	if err != nil {
		return nil, err
	}
	cfg.ListenClientUrls = cu
	cfg.AdvertiseClientUrls = cu
	cfg.ListenPeerUrls = pu
	cfg.AdvertisePeerUrls = pu
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, err
	case <-time.After(timeout):
		e.Close()
		return nil, fmt.Errorf("not ready within %s", timeout)
	}
}

type pkiFiles struct {
	caFile, serverCert, serverKey, saKey, tokenFile, token string
	kubeletClientCert, kubeletClientKey                    string
	caPEM                                                  []byte
}

func writePKI(dir string) (*pkiFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "controlplane-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		// 10.0.0.1 is the `kubernetes` Service (first address of the service range), which
		// pods of a local node (tests/node) reach.
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("10.0.0.1")},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	// The API server's client certificate towards kubelets (system:masters).
	kcKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	kcTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3),
		Subject:      pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	kcDER, err := x509.CreateCertificate(rand.Reader, kcTmpl, caCert, &kcKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	tokenBytes := make([]byte, 24)
	if _, err := rand.Read(tokenBytes); err != nil {
		return nil, err
	}
	p := &pkiFiles{
		caFile:     filepath.Join(dir, "ca.crt"),
		serverCert: filepath.Join(dir, "apiserver.crt"),
		serverKey:  filepath.Join(dir, "apiserver.key"),
		saKey:      filepath.Join(dir, "sa.key"),
		tokenFile:  filepath.Join(dir, "tokens.csv"),
		token:      hex.EncodeToString(tokenBytes),
	}
	p.kubeletClientCert, p.kubeletClientKey = kubeletClientFiles(dir)
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	srvKeyDER, _ := x509.MarshalECPrivateKey(srvKey)
	saKeyDER, _ := x509.MarshalECPrivateKey(saKey)
	kcKeyDER, _ := x509.MarshalECPrivateKey(kcKey)
	files := map[string][]byte{
		p.caFile:            p.caPEM,
		p.serverCert:        pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}),
		p.serverKey:         pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: srvKeyDER}),
		p.saKey:             pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: saKeyDER}),
		p.tokenFile:         []byte(p.token + ",admin,admin-uid,system:masters\n"),
		p.kubeletClientCert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: kcDER}),
		p.kubeletClientKey:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kcKeyDER}),
	}
	for name, data := range files {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func loadOrWritePKI(dir string) (*pkiFiles, error) {
	p := &pkiFiles{
		caFile:     filepath.Join(dir, "ca.crt"),
		serverCert: filepath.Join(dir, "apiserver.crt"),
		serverKey:  filepath.Join(dir, "apiserver.key"),
		saKey:      filepath.Join(dir, "sa.key"),
		tokenFile:  filepath.Join(dir, "tokens.csv"),
	}
	p.kubeletClientCert, p.kubeletClientKey = kubeletClientFiles(dir)
	caPEM, errCA := os.ReadFile(p.caFile)
	tokens, errTok := os.ReadFile(p.tokenFile)
	if errCA != nil || errTok != nil {
		return writePKI(dir)
	}
	p.caPEM = caPEM
	p.token = strings.SplitN(string(tokens), ",", 2)[0]
	return p, nil
}

func kubeletClientFiles(dir string) (string, string) {
	return filepath.Join(dir, "kubelet-client.crt"), filepath.Join(dir, "kubelet-client.key")
}

func loadOrPickPorts(path string) ([]int, error) {
	var ports []int
	if data, err := os.ReadFile(path); err == nil {
		if json.Unmarshal(data, &ports) == nil && len(ports) == 3 {
			return ports, nil
		}
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	return ports, writeJSONAtomic(path, ports)
}

func writeKubeconfig(path, server string, p *pkiFiles) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["controlplane"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: p.caPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: p.token}
	cfg.Contexts["controlplane"] = &clientcmdapi.Context{Cluster: "controlplane", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "controlplane"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return writeAtomic(path, data)
}

func writeJSONAtomic(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(path, data)
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "controlplane:", err)
	return 1
}

func parseURL(s string) ([]url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	return []url.URL{*u}, nil
}
