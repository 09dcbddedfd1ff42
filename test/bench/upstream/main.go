// Command upstream is the application behind the proxies in the load run:
// every request gets the same 512-byte body, except two streaming endpoints:
//
//	POST /upload          reads the whole request body and answers its size
//	GET  /download?bytes=N streams N bytes (default 1 GiB)
package main

import (
	"bytes"
	"flag"
	"io"
	"log"
	"net/http"
	"strconv"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:19771", "address to listen on")
	flag.Parse()
	body := bytes.Repeat([]byte("x"), 511)
	body = append(body, '\n')
	length := strconv.Itoa(len(body))
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain"}
		h["Content-Length"] = []string{length}
		w.Write(body)
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.CopyBuffer(io.Discard, r.Body, make([]byte, 64<<10))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		io.WriteString(w, strconv.FormatInt(n, 10)+"\n")
	})
	mux.HandleFunc("GET /download", func(w http.ResponseWriter, r *http.Request) {
		n := int64(1 << 30)
		if s := r.URL.Query().Get("bytes"); s != "" {
			var err error
			if n, err = strconv.ParseInt(s, 10, 64); err != nil || n < 0 {
				http.Error(w, "bad bytes", http.StatusBadRequest)
				return
			}
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		chunk := bytes.Repeat([]byte("y"), 64<<10)
		for n > 0 {
			k := min(n, int64(len(chunk)))
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	srv := &http.Server{
		Addr:              *listen,
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	log.Fatal(srv.ListenAndServe())
}
