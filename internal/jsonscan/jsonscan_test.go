package jsonscan_test

import (
	"testing"

	"github.com/tasksapi/tasks/internal/jsonscan"
)

func TestSkipValue(t *testing.T) {
	for _, tc := range []struct {
		in   string
		from int
		want string // what SkipValue skips from in[from:]
	}{
		{`"abc",1`, 0, `"abc"`},
		{`"a\"b\\",1`, 0, `"a\"b\\"`},
		{`{"a":[1,{"b":"}"}]},2`, 0, `{"a":[1,{"b":"}"}]}`},
		{`[1, [2, "]"], 3] x`, 0, `[1, [2, "]"], 3]`},
		{`12.5e3,`, 0, `12.5e3`},
		{`true}`, 0, `true`},
		{`null ]`, 0, `null`},
		{`{"k": false, "j": 1}`, 6, `false`},
		{`"unterminated`, 0, `"unterminated`},
		{`[1, 2`, 0, `[1, 2`},
		{`1`, 5, ``},
	} {
		end := jsonscan.SkipValue([]byte(tc.in), tc.from)
		got := ""
		if tc.from < len(tc.in) {
			got = tc.in[tc.from:end]
		}
		if got != tc.want {
			t.Errorf("SkipValue(%q, %d) skips %q, want %q", tc.in, tc.from, got, tc.want)
		}
	}
}

func TestUnquote(t *testing.T) {
	for in, want := range map[string]string{
		`"plain"`:           "plain",
		`""`:                "",
		`"a\"b\\c\u00e9\n"`: "a\"b\\cé\n",
		`"task\u005fid"`:    "task_id",
	} {
		if got := string(jsonscan.Unquote([]byte(in))); got != want {
			t.Errorf("Unquote(%s) = %q, want %q", in, got, want)
		}
	}
	raw := []byte(`"no escapes"`)
	if got := jsonscan.Unquote(raw); &got[0] != &raw[1] {
		t.Error("Unquote copied a string without escapes")
	}
}
