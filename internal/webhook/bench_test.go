package webhook_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/internal/webhook"
)

// benchBody is a ~1 KiB callback body.
var benchBody = []byte(`{"success":true,"task_id":"7489df4c-ef03-4de0-b598-e9a590793434","trace_id":"my-trace-001","created":1721626477,"data":[{"url":"https://cdn.example.com/` + strings.Repeat("a", 880) + `.png"}]}`)

// benchParallelism × GOMAXPROCS goroutines post at once in every benchmark.
const benchParallelism = 8

func benchReceiver(b *testing.B) *httptest.Server {
	b.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(srv.Close)
	return srv
}

func benchSender(b *testing.B, s *webhook.Sender, url string) {
	b.Helper()
	b.SetBytes(int64(len(benchBody)))
	b.SetParallelism(benchParallelism)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if res := s.Send(b.Context(), url, "task-"+strconv.Itoa(i), benchBody, time.Now()); !res.Delivered {
				b.Errorf("Send = %+v", res)
				return
			}
		}
	})
}

// BenchmarkSend: the Sender (unsigned, guard off since the receiver is on
// loopback) against a loopback receiver. Compare with BenchmarkPlainClient.
func BenchmarkSend(b *testing.B) {
	srv := benchReceiver(b)
	benchSender(b, mustSender(b, webhook.Options{AllowPrivateNetworks: true}), srv.URL+"/cb")
}

// BenchmarkSendSigned adds the Standard Webhooks signature.
func BenchmarkSendSigned(b *testing.B) {
	srv := benchReceiver(b)
	benchSender(b, mustSender(b, webhook.Options{AllowPrivateNetworks: true, Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}), srv.URL+"/cb")
}

// BenchmarkSendGuarded runs the guarded path (a fake resolver and a check
// that lets this one loopback address stand in for a public one).
func BenchmarkSendGuarded(b *testing.B) {
	srv := benchReceiver(b)
	s := mustSender(b, webhook.Options{Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
	lo := netip.MustParseAddr("127.0.0.1")
	webhook.SetCheck(s, func(a netip.Addr) string {
		if a == lo {
			return ""
		}
		return webhook.RefusedReason(a)
	})
	webhook.SetLookup(s, func(_ context.Context, host string) ([]netip.Addr, error) { return []netip.Addr{lo}, nil })
	benchSender(b, s, strings.Replace(srv.URL, "127.0.0.1", "receiver.test", 1)+"/cb")
}

// BenchmarkPlainClient is the baseline: a plain http.Client with the same
// idle-connection pool size posting the same body at the same concurrency.
func BenchmarkPlainClient(b *testing.B) {
	srv := benchReceiver(b)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.Cleanup(client.CloseIdleConnections)
	url := srv.URL + "/cb"
	b.SetBytes(int64(len(benchBody)))
	b.SetParallelism(benchParallelism)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Post(url, "application/json", bytes.NewReader(benchBody))
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

func BenchmarkSign(b *testing.B) {
	key, _ := webhook.ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	b.SetBytes(int64(len(benchBody)))
	b.ReportAllocs()
	for b.Loop() {
		webhook.Sign(key, "7489df4c-ef03-4de0-b598-e9a590793434", 1721626477, benchBody)
	}
}

// cannedTransport answers 204 without any network, to measure what the
// Sender adds on top of http.Client (BenchmarkOverhead).
type cannedTransport struct{}

func (cannedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusNoContent, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
}

// BenchmarkOverhead compares the cost of one attempt without the network:
// the Sender (URL check, per-attempt timeout, headers, signing) against a
// plain http.Client.Post through the same canned transport.
func BenchmarkOverhead(b *testing.B) {
	const url = "https://receiver.example/cb"
	b.Run("Sender", func(b *testing.B) {
		s := mustSender(b, webhook.Options{Transport: cannedTransport{}})
		b.ReportAllocs()
		for b.Loop() {
			if res := s.Send(b.Context(), url, "7489df4c-ef03-4de0-b598-e9a590793434", benchBody, time.Now()); !res.Delivered {
				b.Fatalf("Send = %+v", res)
			}
		}
	})
	b.Run("SenderSigned", func(b *testing.B) {
		s := mustSender(b, webhook.Options{Transport: cannedTransport{}, Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
		b.ReportAllocs()
		for b.Loop() {
			if res := s.Send(b.Context(), url, "7489df4c-ef03-4de0-b598-e9a590793434", benchBody, time.Now()); !res.Delivered {
				b.Fatalf("Send = %+v", res)
			}
		}
	})
	b.Run("PlainClient", func(b *testing.B) {
		client := &http.Client{Transport: cannedTransport{}}
		b.ReportAllocs()
		for b.Loop() {
			resp, err := client.Post(url, "application/json", bytes.NewReader(benchBody))
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
