// Command muxbench measures what a multiplexed TLS connection (hashicorp/
// yamux over one TLS 1.3 connection) would change on the direct path over
// TCP, against a TLS 1.3 connection per stream (resumed), as the agents use
// today (agent/peertcp.go): a new stream and its first byte, a 64-byte
// round trip, and bulk throughput, with the CPU of both ends (one process,
// loopback). It is an experiment for issue 9, kept so that its numbers in
// docs/BENCHMARKS.md can be made again; it is its own module so that the
// product does not depend on yamux for it:
//
//	cd docs/experiments/muxbench && go run . -mode tls && go run . -mode mux
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"sort"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
)

func cert() tls.Certificate {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, _ := x509.CreateCertificate(rand.Reader, tpl, tpl, pub, priv)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
}

func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func handle(c net.Conn) {
	var op [1]byte
	if _, err := io.ReadFull(c, op[:]); err != nil {
		c.Close()
		return
	}
	switch op[0] {
	case 'e': // echo
		io.Copy(c, c)
	case 's': // sink
		io.Copy(io.Discard, c)
		c.Write([]byte{1})
	case 'f': // first byte
		c.Write([]byte{1})
		io.Copy(io.Discard, c)
	}
	c.Close()
}

func main() {
	mode := flag.String("mode", "tls", "tls|mux")
	flag.Parse()
	crt := cert()
	sconf := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{crt}, ClientAuth: tls.RequireAnyClientCert}
	cconf := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{crt}, InsecureSkipVerify: true, ClientSessionCache: tls.NewLRUClientSessionCache(8)}
	ln, _ := tls.Listen("tcp", "127.0.0.1:0", sconf)
	ymc := yamux.DefaultConfig()
	ymc.MaxStreamWindowSize = 16 << 20
	ymc.LogOutput = io.Discard
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if *mode == "mux" {
				go func() {
					s, _ := yamux.Server(c, ymc)
					for {
						st, err := s.Accept()
						if err != nil {
							return
						}
						go handle(st)
					}
				}()
			} else {
				go handle(c)
			}
		}
	}()
	var sess *yamux.Session
	if *mode == "mux" {
		c, err := tls.Dial("tcp", ln.Addr().String(), cconf)
		if err != nil {
			panic(err)
		}
		sess, _ = yamux.Client(c, ymc)
	}
	open := func() net.Conn {
		if sess != nil {
			st, err := sess.Open()
			if err != nil {
				panic(err)
			}
			return st
		}
		c, err := tls.Dial("tcp", ln.Addr().String(), cconf)
		if err != nil {
			panic(err)
		}
		return c
	}
	// connect + first byte
	var ds []time.Duration
	c0 := cpu()
	for i := 0; i < 2000; i++ {
		t := time.Now()
		c := open()
		c.Write([]byte{'f'})
		var b [1]byte
		io.ReadFull(c, b[:])
		ds = append(ds, time.Since(t))
		c.Close()
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	fmt.Printf("%s connect+first byte p50 %v  cpu/op %v\n", *mode, ds[len(ds)/2], (cpu()-c0)/2000)
	// rtt
	c := open()
	c.Write([]byte{'e'})
	buf := make([]byte, 64)
	ds = ds[:0]
	c0 = cpu()
	for i := 0; i < 20000; i++ {
		t := time.Now()
		c.Write(buf)
		io.ReadFull(c, buf)
		ds = append(ds, time.Since(t))
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	fmt.Printf("%s rtt64 p50 %v p99 %v cpu/rt %v\n", *mode, ds[len(ds)/2], ds[len(ds)*99/100], (cpu()-c0)/20000)
	c.Close()
	// bulk
	c = open()
	c.Write([]byte{'s'})
	big := make([]byte, 128<<10)
	const total = 2 << 30
	c0 = cpu()
	t := time.Now()
	for n := 0; n < total; n += len(big) {
		c.Write(big)
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else if st, ok := c.(*yamux.Stream); ok {
		st.Close()
	}
	var b [1]byte
	io.ReadFull(c, b[:])
	el := time.Since(t)
	fmt.Printf("%s bulk %.2f Gbit/s cpu s/GB %.2f\n", *mode, float64(total)*8/el.Seconds()/1e9, (cpu()-c0).Seconds()/(float64(total)/1e9))
}
