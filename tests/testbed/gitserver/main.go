// Command gitserver serves Git repositories over smart HTTP on a fixed loopback address for the
// fluxtrace test bed. It is github.com/fluxcd/pkg/gittestserver's server (github.com/fluxcd/gitkit
// over the `git` binary) with a fixed listen address instead of httptest's random one.
//
//	gitserver -listen 127.0.0.1:9780 -root /tmp/repos [-static DIR] [-seed NAME=DIR ...]
//
// A push to http://ADDR/NAME.git creates the bare repository NAME.git under -root when it does not
// exist yet (auto-create). -seed NAME=DIR initialises NAME with one commit of DIR's files on the
// branch main (and master: gittestserver.InitRepo) before serving, unless NAME exists. -static DIR
// serves DIR's files under http://ADDR/static/ (a Helm repository: index.yaml and chart archives).
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/fluxcd/gitkit"
	"github.com/fluxcd/pkg/gittestserver"
)

type seeds []string

func (s *seeds) String() string     { return strings.Join(*s, ",") }
func (s *seeds) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	listen := flag.String("listen", "127.0.0.1:9780", "address to serve Git smart HTTP on")
	root := flag.String("root", "", "directory holding the bare repositories (created if missing)")
	static := flag.String("static", "", "directory served as plain files under /static/ (e.g. a Helm repository)")
	var seed seeds
	flag.Var(&seed, "seed", "NAME=DIR: create repository NAME (e.g. app.git) from DIR's files on branch main; repeatable")
	flag.Parse()
	if *root == "" {
		log.Fatal("-root is required")
	}
	dir, err := filepath.Abs(*root)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Fatal(err)
	}

	for _, s := range seed {
		name, fixture, ok := strings.Cut(s, "=")
		if !ok {
			log.Fatalf("-seed %q: want NAME=DIR", s)
		}
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			continue
		} else if !errors.Is(err, os.ErrNotExist) {
			log.Fatal(err)
		}
		fixture, err := filepath.Abs(fixture)
		if err != nil {
			log.Fatal(err)
		}
		if err := gittestserver.NewGitServer(dir).InitRepo(fixture, "main", name); err != nil {
			log.Fatalf("seeding %s from %s: %v", name, fixture, err)
		}
		log.Printf("seeded %s from %s", name, fixture)
	}

	service := gitkit.New(gitkit.Config{Dir: dir, AutoCreate: true})
	if err := service.Setup(); err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("serving git over http://%s/ from %s\n", ln.Addr(), dir)
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	if *static != "" {
		if err := os.MkdirAll(*static, 0o755); err != nil {
			log.Fatal(err)
		}
		mux.Handle("/static/", http.StripPrefix("/static/", http.FileServer(http.Dir(*static))))
	}
	mux.Handle("/", service)
	log.Fatal(http.Serve(ln, mux))
}
