package jsonw_test

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tasksapi/tasks/internal/jsonw"
)

// AppendString must escape exactly as encoding/json does.
func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	alphabet := []string{"a", "\"", "\\", "<", ">", "&", "\n", "\r", "\t", "\b", "\f", "\x00", "\x1f", "\x7f",
		"é", "猫", "\u2028", "\u2029", "\xff", "\xe2\x82", "🙂", " "}
	cases := []string{"", "plain", strings.Repeat("x", 100)}
	for i := 0; i < 2000; i++ {
		var sb strings.Builder
		for j := rng.IntN(12); j >= 0; j-- {
			sb.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		cases = append(cases, sb.String())
	}
	for _, s := range cases {
		want, _ := json.Marshal(s)
		if got := jsonw.AppendString(nil, s); string(got) != string(want) {
			t.Fatalf("AppendString(%q) = %s, want %s", s, got, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	f.Add("a<b>&\u2028\xff\x01")
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := jsonw.AppendString(nil, s); string(got) != string(want) {
			t.Fatalf("AppendString(%q) = %s, want %s", s, got, want)
		}
	})
}

// AppendMillis must write the digits encoding/json writes for the float.
func TestAppendMillisMatchesFloat(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	values := []int64{0, 1, 10, 100, 999, 1000, 1001, 1500, 1763142607967, 1763142607970, 1763142607900, 1763142608000, -1, -1500, -1000}
	for i := 0; i < 5000; i++ {
		values = append(values, rng.Int64N(4_000_000_000_000))
	}
	for _, ms := range values {
		want, _ := json.Marshal(float64(ms) / 1000)
		if got := jsonw.AppendMillis(nil, ms); string(got) != string(want) {
			t.Fatalf("AppendMillis(%d) = %s, want %s", ms, got, want)
		}
	}
}
