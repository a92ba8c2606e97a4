package servers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/portico-gw/portico/bench/internal/procs"
	"github.com/portico-gw/portico/gateway/tlsconfig"
)

// nginxConf proxies gRPC to the backend the way a production nginx would:
// one worker per core, keep-alive upstream connections, an access log;
// with TLS, it terminates TLS (h2 by ALPN) with a shared session cache.
// Every path it writes is under Dir, so it needs no system directories.
var nginxConf = template.Must(template.New("nginx").Parse(`
daemon off;
master_process on;
worker_processes auto;
{{if .Root}}user root root;{{end}}
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log warn;
events { worker_connections 4096; }
http {
  access_log {{.Dir}}/access.log;
  client_body_temp_path {{.Dir}}/body;
  proxy_temp_path {{.Dir}}/proxy;
  fastcgi_temp_path {{.Dir}}/fastcgi;
  uwsgi_temp_path {{.Dir}}/uwsgi;
  scgi_temp_path {{.Dir}}/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  upstream backend {
{{- range .Backends}}
    server {{.}}{{$.ServerParams}};
{{- end}}
    keepalive 64;
    keepalive_requests 100000000;
  }
  server {
{{- if .TLS}}
    listen {{.Listen}} ssl http2;
    ssl_certificate {{.TLS.CertFile}};
    ssl_certificate_key {{.TLS.KeyFile}};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
{{- else}}
    listen {{.Listen}} http2;
{{- end}}
    http2_max_concurrent_streams 1024;
    location / {
      grpc_pass grpc://backend;
{{- range .Directives}}
      {{.}};
{{- end}}
    }
  }
}
`))

// Nginx is the native gRPC baseline: nginx from Debian's packages with
// grpc_pass to the backend; with tc, the same terminating TLS, the peer of
// Portico's gRPC over TLS. It installs nginx with apt-get when there is
// none. It returns the running nginx, its gRPC address and its version.
func Nginx(ctx context.Context, dir, backendAddr string, tc *tlsconfig.Config) (*procs.Process, string, string, error) {
	return startNginx(ctx, dir, nginxParams{Backends: []string{backendAddr}, TLS: tc})
}

// nginxParams fill in nginxConf: the upstream's servers, each with
// ServerParams, and Directives added to the location after grpc_pass.
type nginxParams struct {
	Backends     []string
	ServerParams string
	Directives   []string
	TLS          *tlsconfig.Config
}

func startNginx(ctx context.Context, dir string, np nginxParams) (*procs.Process, string, string, error) {
	bin, err := findNginx(ctx)
	if err != nil {
		return nil, "", "", err
	}
	out, _ := exec.CommandContext(ctx, bin, "-v").CombinedOutput()
	version := strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: ")
	version = strings.TrimPrefix(version, "nginx/")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", "", err
	}
	listen := l.Addr().String()
	l.Close()
	var conf bytes.Buffer
	if err := nginxConf.Execute(&conf, map[string]any{"Dir": dir, "Backends": np.Backends, "ServerParams": np.ServerParams,
		"Directives": np.Directives, "Listen": listen, "Root": os.Geteuid() == 0, "TLS": np.TLS}); err != nil {
		return nil, "", "", err
	}
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, conf.Bytes(), 0o644); err != nil {
		return nil, "", "", err
	}
	p, err := procs.Start(bin, filepath.Join(dir, "nginx.out"), "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log"))
	if err != nil {
		return nil, "", "", err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", listen, time.Second); err == nil {
			c.Close()
			return p, listen, version, nil
		}
		if p.Exited() || time.Now().After(deadline) {
			p.Stop()
			errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return nil, "", "", fmt.Errorf("nginx did not start:\n%s%s", p.Output(), errLog)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func findNginx(ctx context.Context) (string, error) {
	for _, p := range []string{"nginx", "/usr/sbin/nginx"} {
		if bin, err := exec.LookPath(p); err == nil {
			return bin, nil
		}
	}
	if os.Geteuid() != 0 {
		return "", errors.New("no nginx, and not root to install it: apt-get install nginx")
	}
	fmt.Fprintln(os.Stderr, "installing nginx: apt-get update && apt-get install -y nginx")
	for _, args := range [][]string{{"update", "-qq"}, {"install", "-y", "-qq", "nginx"}} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get %s: %w\n%s", args[0], err, out)
		}
	}
	return exec.LookPath("/usr/sbin/nginx")
}
