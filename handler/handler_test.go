package handler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/google/uuid"

	"github.com/tasksapi/tasks/handler"
	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// call is one HTTP request to the handler.
type call struct {
	method string            // "" is POST
	auth   string            // the Authorization header; "" sends none
	header map[string]string // more headers (Content-Type is application/json unless set here; "" removes it)
	body   string
	// unsized sends the body without a Content-Length, as a chunked
	// request does, so the handler learns its size only by reading it.
	unsized bool
}

func (c call) request() *http.Request {
	method := c.method
	if method == "" {
		method = http.MethodPost
	}
	r := httptest.NewRequest(method, "/openai/tasks", strings.NewReader(c.body))
	if c.unsized {
		r.ContentLength = -1
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json")
	if c.auth != "" {
		r.Header.Set("Authorization", c.auth)
	}
	for k, v := range c.header {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
	return r
}

func serve(h http.Handler, c call) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, c.request())
	return rec
}

const (
	asTenant1  = "Bearer tok-tenant1"
	asTenant2  = "Bearer tok-tenant2"
	asOperator = "Bearer tok-operator"
	asApp1     = "Bearer tok-app1"
)

// traceIDs collects every error trace_id seen by a test run, to check that
// each is fresh.
type traceIDs struct {
	mu   sync.Mutex
	seen map[string]bool
}

// checkError asserts the contract's error answer byte for byte, except for
// the trace_id, which must be a fresh random UUID. It returns the trace_id.
func (ids *traceIDs) checkError(t *testing.T, rec *httptest.ResponseRecorder, status int, code, msg string) string {
	t.Helper()
	if rec.Code != status {
		t.Errorf("status = %d, want %d (body %s)", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	m, _ := json.Marshal(msg)
	prefix := fmt.Sprintf(`{"error":{"code":%q,"message":%s},"trace_id":"`, code, m)
	body := rec.Body.String()
	rest, ok := strings.CutPrefix(body, prefix)
	if !ok {
		t.Errorf("body = %s\nwant  %s<uuid>\"}", body, prefix)
		return ""
	}
	id, ok := strings.CutSuffix(rest, `"}`)
	u, err := uuid.Parse(id)
	if !ok || err != nil || len(id) != 36 || u.Version() != 4 {
		t.Errorf("trace_id %q in %s is not a random UUID", id, body)
		return id
	}
	ids.mu.Lock()
	defer ids.mu.Unlock()
	if ids.seen == nil {
		ids.seen = map[string]bool{}
	}
	if ids.seen[id] {
		t.Errorf("trace_id %s seen before", id)
	}
	ids.seen[id] = true
	return id
}

// row is one case of the wire table: a request against a store holding the
// fixtures, and the exact answer.
type row struct {
	name string
	opts []handler.Option
	call
	status int
	body   string // the exact 200 body
	code   string // or the error code…
	msg    string // …and message
}

var (
	typesOpenAI      = handler.WithTypes("images_generations", "images_edits")
	retrieveFinished = `{"action":"retrieve","id":"` + taskFinished.ID + `"}`
)

func wireTable() []row {
	batch := func(count int, items ...string) string {
		return `{"items":[` + strings.Join(items, ",") + `],"count":` + fmt.Sprint(count) + `}`
	}
	ok := func(name, auth, body, want string, opts ...handler.Option) row {
		return row{name: name, opts: opts, call: call{auth: auth, body: body}, status: 200, body: want}
	}
	bad := func(name, body, msg string) row {
		return row{name: name, call: call{auth: asTenant1, body: body}, status: 400, code: "bad_request", msg: msg}
	}
	bigIDs := `"` + strings.Repeat(`x","`, 100) + `x"`
	oneMiB := func(extra int) string {
		head := `{"id":"` + taskFinished.ID + `","pad":"`
		return head + strings.Repeat("p", 1<<20-len(head)-2+extra) + `"}`
	}
	var manyKeys strings.Builder
	manyKeys.WriteString(`{`)
	for i := range 40 {
		fmt.Fprintf(&manyKeys, `"k%d":%d,`, i, i)
	}
	manyKeys.WriteString(`"k33":0}`)

	return []row{
		// retrieve
		ok("Retrieve/Finished", asTenant1, retrieveFinished, wireFinished),
		ok("Retrieve/Unfinished", asTenant1, `{"action":"retrieve","id":"`+taskUnfinished.ID+`"}`, wireUnfinished),
		ok("Retrieve/DefaultAction", asTenant1, `{"id":"`+taskFinished.ID+`"}`, wireFinished),
		ok("Retrieve/NullsAreAbsent", asTenant1, `{"action":null,"id":"`+taskFinished.ID+`","trace_id":null}`, wireFinished),
		ok("Retrieve/EmptyTraceIDIsAbsent", asTenant1, `{"id":"`+taskFinished.ID+`","trace_id":""}`, wireFinished),
		ok("Retrieve/UnknownFieldsIgnored", asTenant1, `{"Action":"delete","id":"`+taskFinished.ID+`","x":[1,{"a":null}],"limit":"unused"}`, wireFinished),
		ok("Retrieve/EscapedKeyAndValue", asTenant1, `{"\u0061ction":"retri\u0065ve","\u0069d":"`+strings.Replace(taskFinished.ID, "7", `\u0037`, 1)+`"}`, wireFinished),
		ok("Retrieve/WhiteSpace", asTenant1, " \n\t{ \"id\" :\r\n\""+taskFinished.ID+"\" } \n", wireFinished),
		ok("Retrieve/ByTraceID/NewestVisible", asTenant1, `{"action":"retrieve","trace_id":"my-trace-001"}`, wireFinished),
		ok("Retrieve/ByTraceID/OperatorNewest", asOperator, `{"action":"retrieve","trace_id":"my-trace-001"}`, wireOther),
		ok("Retrieve/ByTraceID/OtherTenant", asTenant2, `{"action":"retrieve","trace_id":"my-trace-001"}`, wireOther),
		ok("Retrieve/ByTraceID/NotFound", asOperator, `{"action":"retrieve","trace_id":"nope"}`, `{}`),
		ok("Retrieve/ByTraceID/TooLong", asOperator, `{"trace_id":"`+strings.Repeat("t", 129)+`"}`, `{}`),
		ok("Retrieve/Both/Match", asTenant1, `{"id":"`+taskFinished.ID+`","trace_id":"my-trace-001"}`, wireFinished),
		ok("Retrieve/Both/Mismatch", asTenant1, `{"id":"`+taskFinished.ID+`","trace_id":"other"}`, `{}`),
		ok("Retrieve/Both/OtherTenantsTrace", asTenant2, `{"id":"`+taskFinished.ID+`","trace_id":"my-trace-001"}`, `{}`),
		ok("Retrieve/NotFound", asTenant1, `{"action":"retrieve","id":"00000000-0000-4000-8000-000000000000"}`, `{}`),
		ok("Retrieve/IDTooLong", asOperator, `{"id":"`+strings.Repeat("i", 129)+`"}`, `{}`),
		ok("Retrieve/OtherTenant", asTenant1, `{"id":"`+taskOther.ID+`"}`, `{}`),
		ok("Retrieve/OtherTenantByApp", asApp1, `{"id":"`+taskOther.ID+`"}`, `{}`),
		ok("Retrieve/AppPrincipal", asApp1, retrieveFinished, wireFinished),
		ok("Retrieve/Operator", asOperator, `{"id":"`+taskOther.ID+`"}`, wireOther),
		ok("Retrieve/OwnerOfOther", asTenant2, `{"id":"`+taskOther.ID+`"}`, wireOther),
		ok("Retrieve/Mount/OtherType", asTenant1, `{"id":"`+taskFlux.ID+`"}`, `{}`, typesOpenAI),
		ok("Retrieve/Mount/OtherTypeByTrace", asTenant1, `{"trace_id":"flux-trace"}`, `{}`, typesOpenAI),
		ok("Retrieve/Mount/OwnType", asTenant1, retrieveFinished, wireFinished, typesOpenAI),
		ok("Retrieve/Mount/Flux", asTenant1, `{"id":"`+taskFlux.ID+`"}`, wireFlux, handler.WithTypes("flux_generations")),
		{name: "Retrieve/ContentType/Charset", call: call{auth: asTenant1, body: retrieveFinished,
			header: map[string]string{"Content-Type": "application/json; charset=utf-8"}}, status: 200, body: wireFinished},
		{name: "Retrieve/ContentType/Case", call: call{auth: asTenant1, body: retrieveFinished,
			header: map[string]string{"Content-Type": "Application/JSON"}}, status: 200, body: wireFinished},
		{name: "Retrieve/ContentType/Absent", call: call{auth: asTenant1, body: retrieveFinished,
			header: map[string]string{"Content-Type": ""}}, status: 200, body: wireFinished},
		ok("Retrieve/Auth/LowerCaseScheme", "bearer tok-tenant1", retrieveFinished, wireFinished),
		ok("Retrieve/Auth/ExtraSpaces", "BEARER   tok-tenant1  ", retrieveFinished, wireFinished),
		ok("Retrieve/BodyOf1MiB", asTenant1, oneMiB(0), wireFinished),
		{name: "Retrieve/BodyOf1MiBUnsized", call: call{auth: asTenant1, body: oneMiB(0), unsized: true}, status: 200, body: wireFinished},
		ok("Retrieve/ManyDistinctKeys", asTenant1, strings.Replace(manyKeys.String(), `"k33":0}`, `"id":"`+taskFinished.ID+`"}`, 1), wireFinished),

		// retrieve_batch
		ok("Batch/Defaults", asTenant1, `{"action":"retrieve_batch"}`, batch(3, wireUnfinished, wireFlux, wireFinished)),
		ok("Batch/Operator", asOperator, `{"action":"retrieve_batch"}`, batch(4, wireOther, wireUnfinished, wireFlux, wireFinished)),
		ok("Batch/Paging", asTenant1, `{"action":"retrieve_batch","offset":1,"limit":1}`, batch(3, wireFlux)),
		ok("Batch/OffsetPastEnd", asTenant1, `{"action":"retrieve_batch","offset":3}`, batch(3)),
		ok("Batch/LimitMax", asTenant1, `{"action":"retrieve_batch","limit":100,"offset":0}`, batch(3, wireUnfinished, wireFlux, wireFinished)),
		ok("Batch/MinusZeroOffset", asTenant1, `{"action":"retrieve_batch","offset":-0,"limit":1}`, batch(3, wireUnfinished)),
		ok("Batch/IDs", asTenant1, `{"action":"retrieve_batch","ids":["`+taskOther.ID+`","`+taskFinished.ID+`","nope"]}`, batch(1, wireFinished)),
		ok("Batch/IDs/Max", asTenant1, `{"action":"retrieve_batch","ids":[`+strings.TrimSuffix(strings.Repeat(`"x",`, 100), ",")+`]}`, batch(0)),
		ok("Batch/TraceIDs/Max", asTenant1, `{"action":"retrieve_batch","trace_ids":[`+strings.TrimSuffix(strings.Repeat(`"x",`, 100), ",")+`]}`, batch(0)),
		ok("Batch/IDs/Operator", asOperator, `{"action":"retrieve_batch","ids":["`+taskOther.ID+`","`+taskFinished.ID+`"]}`, batch(2, wireOther, wireFinished)),
		ok("Batch/EmptyListsAreAbsent", asTenant1, `{"action":"retrieve_batch","ids":[],"trace_ids":null,"user_id":""}`, batch(3, wireUnfinished, wireFlux, wireFinished)),
		ok("Batch/TraceIDs", asOperator, `{"action":"retrieve_batch","trace_ids":["my-trace-001"]}`, batch(2, wireOther, wireFinished)),
		ok("Batch/TraceIDs/Tenant", asTenant1, `{"action":"retrieve_batch","trace_ids":["my-trace-001","flux-trace"]}`, batch(2, wireFlux, wireFinished)),
		ok("Batch/OwnApplication", asTenant1, `{"action":"retrieve_batch","application_id":"app-1","user_id":"user-1"}`, batch(3, wireUnfinished, wireFlux, wireFinished)),
		ok("Batch/OtherApplication", asTenant1, `{"action":"retrieve_batch","application_id":"app-2"}`, batch(0)),
		ok("Batch/OtherUser", asTenant1, `{"action":"retrieve_batch","user_id":"user-2"}`, batch(0)),
		ok("Batch/AppPrincipal/OtherUser", asApp1, `{"action":"retrieve_batch","user_id":"user-2"}`, batch(0)),
		ok("Batch/Operator/User", asOperator, `{"action":"retrieve_batch","user_id":"user-2"}`, batch(1, wireOther)),
		ok("Batch/Type", asTenant1, `{"action":"retrieve_batch","type":"images_edits"}`, batch(1, wireUnfinished)),
		ok("Batch/Mount", asTenant1, `{"action":"retrieve_batch"}`, batch(2, wireUnfinished, wireFinished), typesOpenAI),
		ok("Batch/Mount/OtherType", asTenant1, `{"action":"retrieve_batch","type":"flux_generations"}`, batch(0), typesOpenAI),
		ok("Batch/Mount/OwnType", asTenant1, `{"action":"retrieve_batch","type":"images_generations"}`, batch(1, wireFinished), typesOpenAI),
		ok("Batch/Window/Inclusive", asTenant1, `{"action":"retrieve_batch","created_at_min":1763142607.967,"created_at_max":1763142650}`, batch(2, wireFlux, wireFinished)),
		ok("Batch/Window/Exponent", asTenant1, `{"action":"retrieve_batch","created_at_min":1.763142607967e9,"created_at_max":17631426500E-1}`, batch(2, wireFlux, wireFinished)),
		ok("Batch/Window/MinFraction", asTenant1, `{"action":"retrieve_batch","created_at_min":1763142607.9670001}`, batch(2, wireUnfinished, wireFlux)),
		// Finer than a nanosecond past the finished task's creation: it is
		// not inside the window.
		ok("Batch/Window/MinBeyondNanos", asTenant1, `{"action":"retrieve_batch","created_at_min":1763142607.9670000001}`, batch(2, wireUnfinished, wireFlux)),
		ok("Batch/Window/MaxFraction", asTenant1, `{"action":"retrieve_batch","created_at_max":1763142607.9669999}`, batch(0)),
		ok("Batch/Window/Integers", asTenant1, `{"action":"retrieve_batch","created_at_min":1763142608,"created_at_max":1763142700}`, batch(1, wireFlux)),
		ok("Batch/Window/Inverted", asTenant1, `{"action":"retrieve_batch","created_at_min":1763142700,"created_at_max":1763142608}`, batch(0)),
		ok("Batch/Window/Zero", asTenant1, `{"action":"retrieve_batch","created_at_min":0,"created_at_max":0}`, batch(0)),
		ok("Batch/Window/Max", asTenant1, `{"action":"retrieve_batch","created_at_min":0,"created_at_max":10000000000}`, batch(3, wireUnfinished, wireFlux, wireFinished)),
		ok("Batch/Window/MinBeyondStores", asTenant1, `{"action":"retrieve_batch","created_at_min":9999999999.5}`, batch(0)),
		ok("Batch/IgnoresRetrieveFields", asTenant1, `{"action":"retrieve_batch","id":5,"trace_id":[]}`, batch(3, wireUnfinished, wireFlux, wireFinished)),

		// status and callback_status
		ok("Batch/Status/Succeeded", asTenant1, `{"action":"retrieve_batch","status":"succeeded"}`, batch(1, wireFinished)),
		ok("Batch/Status/Running", asTenant1, `{"action":"retrieve_batch","status":"running"}`, batch(1, wireFlux)),
		ok("Batch/Status/Pending", asTenant1, `{"action":"retrieve_batch","status":"pending"}`, batch(1, wireUnfinished)),
		ok("Batch/Status/Failed/Tenant", asTenant1, `{"action":"retrieve_batch","status":"failed"}`, batch(0)),
		ok("Batch/Status/Failed/Operator", asOperator, `{"action":"retrieve_batch","status":"failed"}`, batch(1, wireOther)),
		ok("Batch/Status/Failed/OtherUser", asTenant1, `{"action":"retrieve_batch","status":"failed","user_id":"user-2"}`, batch(0)),
		ok("Batch/Status/EmptyIsAbsent", asTenant1, `{"action":"retrieve_batch","status":"","callback_status":null}`, batch(3, wireUnfinished, wireFlux, wireFinished)),
		ok("Batch/Status/Escaped", asTenant1, `{"action":"retrieve_batch","status":"succ\u0065eded"}`, batch(1, wireFinished)),
		ok("Batch/CallbackStatus/Delivered", asTenant1, `{"action":"retrieve_batch","callback_status":"delivered"}`, batch(1, wireFinished)),
		ok("Batch/CallbackStatus/Waiting", asTenant1, `{"action":"retrieve_batch","callback_status":"waiting"}`, batch(1, wireFlux)),
		ok("Batch/CallbackStatus/Waiting/Mount", asTenant1, `{"action":"retrieve_batch","callback_status":"waiting"}`, batch(0), typesOpenAI),
		ok("Batch/CallbackStatus/Pending", asOperator, `{"action":"retrieve_batch","callback_status":"pending"}`, batch(0)),
		ok("Batch/CallbackStatus/Failed/Tenant", asTenant1, `{"action":"retrieve_batch","callback_status":"failed"}`, batch(0)),
		ok("Batch/CallbackStatus/Failed/Operator", asOperator, `{"action":"retrieve_batch","callback_status":"failed"}`, batch(1, wireOther)),
		ok("Batch/CallbackStatus/Failed/App", asApp1, `{"action":"retrieve_batch","callback_status":"failed"}`, batch(0)),
		ok("Batch/CallbackStatus/Failed/Owner", asTenant2, `{"action":"retrieve_batch","callback_status":"failed","limit":1}`, batch(1, wireOther)),
		ok("Batch/Statuses/Both", asOperator, `{"action":"retrieve_batch","status":"succeeded","callback_status":"delivered"}`, batch(1, wireFinished)),
		ok("Batch/Statuses/Mismatch", asOperator, `{"action":"retrieve_batch","status":"failed","callback_status":"delivered"}`, batch(0)),
		ok("Batch/Statuses/WithIDs", asOperator, `{"action":"retrieve_batch","status":"failed","ids":["`+taskOther.ID+`","`+taskFinished.ID+`"]}`, batch(1, wireOther)),
		ok("Batch/Statuses/WithTrace", asOperator, `{"action":"retrieve_batch","callback_status":"delivered","trace_ids":["my-trace-001"]}`, batch(1, wireFinished)),

		// redeliver
		ok("Redeliver/Own", asTenant1, `{"action":"redeliver","id":"`+taskFinished.ID+`"}`, `{"redelivered":["`+taskFinished.ID+`"],"count":1}`),
		ok("Redeliver/OwnInList", asTenant1, `{"action":"redeliver","ids":["nope","`+taskFinished.ID+`","`+taskUnfinished.ID+`","`+taskFlux.ID+`"]}`,
			`{"redelivered":["`+taskFinished.ID+`"],"count":1}`),
		ok("Redeliver/OtherTenant", asTenant1, `{"action":"redeliver","id":"`+taskOther.ID+`"}`, `{"redelivered":[],"count":0}`),
		ok("Redeliver/OtherApp", asApp1, `{"action":"redeliver","ids":["`+taskOther.ID+`"]}`, `{"redelivered":[],"count":0}`),
		ok("Redeliver/Owner", asTenant2, `{"action":"redeliver","id":"`+taskOther.ID+`"}`, `{"redelivered":["`+taskOther.ID+`"],"count":1}`),
		ok("Redeliver/Operator", asOperator, `{"action":"redeliver","id":"`+taskOther.ID+`","ids":["`+taskFinished.ID+`","`+taskOther.ID+`"]}`,
			`{"redelivered":["`+taskOther.ID+`","`+taskFinished.ID+`"],"count":2}`),
		ok("Redeliver/Unfinished", asTenant1, `{"action":"redeliver","id":"`+taskFlux.ID+`"}`, `{"redelivered":[],"count":0}`),
		ok("Redeliver/NoCallback", asTenant1, `{"action":"redeliver","id":"`+taskUnfinished.ID+`"}`, `{"redelivered":[],"count":0}`),
		ok("Redeliver/Missing", asTenant1, `{"action":"redeliver","id":"nope"}`, `{"redelivered":[],"count":0}`),
		ok("Redeliver/IDTooLong", asOperator, `{"action":"redeliver","id":"`+strings.Repeat("i", 129)+`"}`, `{"redelivered":[],"count":0}`),
		ok("Redeliver/Mount/OtherType", asOperator, `{"action":"redeliver","id":"`+taskFinished.ID+`"}`, `{"redelivered":[],"count":0}`, handler.WithTypes("flux_generations")),
		ok("Redeliver/Mount/OwnType", asOperator, `{"action":"redeliver","id":"`+taskFinished.ID+`"}`, `{"redelivered":["`+taskFinished.ID+`"],"count":1}`, typesOpenAI),
		ok("Redeliver/IDs/Max", asTenant1, `{"action":"redeliver","ids":[`+strings.TrimSuffix(strings.Repeat(`"x",`, 100), ",")+`]}`, `{"redelivered":[],"count":0}`),

		// delete
		ok("Delete/Own", asTenant1, `{"action":"delete","id":"`+taskFinished.ID+`"}`, `{"id":"`+taskFinished.ID+`","deleted":true}`),
		ok("Delete/Missing", asTenant1, `{"action":"delete","id":"nope"}`, `{"id":"nope","deleted":false}`),
		ok("Delete/OtherTenant", asTenant1, `{"action":"delete","id":"`+taskOther.ID+`"}`, `{"id":"`+taskOther.ID+`","deleted":false}`),
		ok("Delete/Operator", asOperator, `{"action":"delete","id":"`+taskOther.ID+`"}`, `{"id":"`+taskOther.ID+`","deleted":true}`),
		ok("Delete/Mount/OtherType", asTenant1, `{"action":"delete","id":"`+taskFlux.ID+`"}`, `{"id":"`+taskFlux.ID+`","deleted":false}`, typesOpenAI),
		ok("Delete/IDEscaped", asTenant1, `{"action":"delete","id":"<\u2028>"}`, `{"id":"\u003c\u2028\u003e","deleted":false}`),
		ok("Delete/IDTooLong", asOperator, `{"action":"delete","id":"`+strings.Repeat("i", 200)+`"}`, `{"id":"`+strings.Repeat("i", 200)+`","deleted":false}`),

		// the error table: method, authentication, body, fields
		{name: "Method/GET", call: call{method: "GET", auth: asTenant1}, status: 405, code: "bad_request", msg: "the method must be POST"},
		{name: "Method/PUT", call: call{method: "PUT", auth: asTenant1, body: retrieveFinished}, status: 405, code: "bad_request", msg: "the method must be POST"},
		{name: "Method/DELETE", call: call{method: "DELETE", auth: asTenant1, body: retrieveFinished}, status: 405, code: "bad_request", msg: "the method must be POST"},
		{name: "Method/BeforeAuth", call: call{method: "GET"}, status: 405, code: "bad_request", msg: "the method must be POST"},
		{name: "Auth/NoHeader", call: call{body: retrieveFinished}, status: 400, code: "no_token", msg: "the authorization header is missing"},
		{name: "Auth/BlankHeader", call: call{auth: "   ", body: retrieveFinished}, status: 400, code: "no_token", msg: "the authorization header is missing"},
		{name: "Auth/NoHeaderBadBody", call: call{body: `{`}, status: 400, code: "no_token", msg: "the authorization header is missing"},
		{name: "Auth/UnknownToken", call: call{auth: "Bearer nope", body: retrieveFinished}, status: 401, code: "invalid_token", msg: "the token is not accepted"},
		{name: "Auth/TokenPrefix", call: call{auth: "Bearer tok-tenant", body: retrieveFinished}, status: 401, code: "invalid_token", msg: "the token is not accepted"},
		{name: "Auth/TokenExtended", call: call{auth: "Bearer tok-tenant1x", body: retrieveFinished}, status: 401, code: "invalid_token", msg: "the token is not accepted"},
		{name: "Auth/NoToken", call: call{auth: "Bearer", body: retrieveFinished}, status: 401, code: "invalid_token", msg: "the token is not accepted"},
		{name: "Auth/OtherScheme", call: call{auth: "Basic dG9rLXRlbmFudDE=", body: retrieveFinished}, status: 401, code: "invalid_token", msg: "the token is not accepted"},
		{name: "Auth/NoScheme", call: call{auth: "tok-tenant1", body: retrieveFinished}, status: 401, code: "invalid_token", msg: "the token is not accepted"},
		{name: "Auth/BeforeBody", call: call{auth: "Bearer nope", body: `{`}, status: 401, code: "invalid_token", msg: "the token is not accepted"},
		{name: "ContentType/Text", call: call{auth: asTenant1, body: retrieveFinished, header: map[string]string{"Content-Type": "text/plain"}},
			status: 400, code: "bad_request", msg: "the Content-Type must be application/json"},
		{name: "ContentType/Form", call: call{auth: asTenant1, body: "id=x", header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}},
			status: 400, code: "bad_request", msg: "the Content-Type must be application/json"},
		{name: "ContentType/Malformed", call: call{auth: asTenant1, body: retrieveFinished, header: map[string]string{"Content-Type": "application/json; ="}},
			status: 400, code: "bad_request", msg: "the Content-Type must be application/json"},
		bad("Body/Empty", ``, "the request body must be a JSON object"),
		bad("Body/WhiteSpace", " \n", "the request body must be a JSON object"),
		bad("Body/Null", `null`, "the request body must be a JSON object"),
		bad("Body/Array", `[{"id":"x"}]`, "the request body must be a JSON object"),
		bad("Body/String", `"x"`, "the request body must be a JSON object"),
		bad("Body/Number", `1`, "the request body must be a JSON object"),
		bad("Body/Truncated", `{"id":"x"`, "the request body is not valid JSON: it ends before the object does"),
		bad("Body/Malformed", `{"id":}`, "the request body is not valid JSON: invalid character '}' looking for beginning of value (at byte 7)"),
		bad("Body/SingleQuotes", `{'id':'x'}`, "the request body is not valid JSON: invalid character '\\'' looking for beginning of object key string (at byte 2)"),
		bad("Body/TrailingObject", `{"id":"x"} {}`, "the request body must be a single JSON object with nothing after it"),
		bad("Body/TrailingGarbage", `{"id":"x"}x`, "the request body must be a single JSON object with nothing after it"),
		bad("Body/InvalidUTF8", "{\"id\":\"\xff\"}", "the request body must be valid UTF-8"),
		bad("Body/TooLarge", oneMiB(1), "the request body must be at most 1048576 bytes"),
		{name: "Body/TooLargeUnsized", call: call{auth: asTenant1, body: oneMiB(1), unsized: true},
			status: 400, code: "bad_request", msg: "the request body must be at most 1048576 bytes"},
		bad("Body/DuplicateKey", `{"id":"a","id":"b"}`, `duplicate key "id" in the request body`),
		bad("Body/DuplicateEscapedKey", `{"id":"a","\u0069d":"a"}`, `duplicate key "id" in the request body`),
		bad("Body/DuplicateUnknownKey", `{"id":"a","x":1,"x":1}`, `duplicate key "x" in the request body`),
		bad("Body/DuplicateAmongMany", manyKeys.String(), `duplicate key "k33" in the request body`),
		bad("Action/NotString", `{"action":1,"id":"x"}`, "action must be a string"),
		bad("Action/Unknown", `{"action":"x","id":"x"}`, `unknown action "x"`),
		bad("Action/Empty", `{"action":"","id":"x"}`, `unknown action ""`),
		bad("Action/Case", `{"action":"RETRIEVE","id":"x"}`, `unknown action "RETRIEVE"`),
		bad("Action/Long", `{"action":"`+strings.Repeat("a", 100)+`"}`, `unknown action "`+strings.Repeat("a", 64)+`…"`),
		bad("Retrieve/NoID", `{"action":"retrieve"}`, "id or trace_id is required"),
		bad("Retrieve/EmptyObject", `{}`, "id or trace_id is required"),
		bad("Retrieve/EmptyID", `{"id":""}`, "id or trace_id is required"),
		bad("Retrieve/IDNumber", `{"id":5}`, "id must be a string"),
		bad("Retrieve/IDObject", `{"id":{"a":"b"}}`, "id must be a string"),
		bad("Retrieve/TraceIDBool", `{"trace_id":true}`, "trace_id must be a string"),
		bad("Delete/NoID", `{"action":"delete","trace_id":"my-trace-001"}`, "id is required"),
		bad("Delete/IDArray", `{"action":"delete","id":["x"]}`, "id must be a string"),
		bad("Batch/LimitString", `{"action":"retrieve_batch","limit":"3"}`, "limit must be an integer"),
		bad("Batch/LimitFraction", `{"action":"retrieve_batch","limit":1.5}`, "limit must be an integer"),
		bad("Batch/LimitPointZero", `{"action":"retrieve_batch","limit":1.0}`, "limit must be an integer"),
		bad("Batch/LimitExponent", `{"action":"retrieve_batch","limit":1e1}`, "limit must be an integer"),
		bad("Batch/LimitZero", `{"action":"retrieve_batch","limit":0}`, "limit must be between 1 and 100"),
		bad("Batch/LimitNegative", `{"action":"retrieve_batch","limit":-1}`, "limit must be between 1 and 100"),
		bad("Batch/LimitTooLarge", `{"action":"retrieve_batch","limit":101}`, "limit must be between 1 and 100"),
		bad("Batch/LimitHuge", `{"action":"retrieve_batch","limit":99999999999999999999999}`, "limit must be between 1 and 100"),
		bad("Batch/OffsetNegative", `{"action":"retrieve_batch","offset":-1}`, "offset must be a non-negative integer"),
		bad("Batch/OffsetFraction", `{"action":"retrieve_batch","offset":0.5}`, "offset must be a non-negative integer"),
		bad("Batch/OffsetString", `{"action":"retrieve_batch","offset":"0"}`, "offset must be a non-negative integer"),
		bad("Batch/OffsetTooLarge", `{"action":"retrieve_batch","offset":1000000001}`, "offset must be at most 1000000000"),
		bad("Batch/OffsetHuge", `{"action":"retrieve_batch","offset":99999999999999999999999}`, "offset must be at most 1000000000"),
		bad("Batch/IDsString", `{"action":"retrieve_batch","ids":"x"}`, "ids must be an array of at most 100 strings"),
		bad("Batch/IDsNumbers", `{"action":"retrieve_batch","ids":["x",1]}`, "ids must be an array of at most 100 strings"),
		bad("Batch/IDsNull", `{"action":"retrieve_batch","ids":[null]}`, "ids must be an array of at most 100 strings"),
		bad("Batch/IDsObject", `{"action":"retrieve_batch","ids":{"a":"b"}}`, "ids must be an array of at most 100 strings"),
		bad("Batch/IDsTooMany", `{"action":"retrieve_batch","ids":[`+bigIDs+`]}`, "ids must be an array of at most 100 strings"),
		bad("Batch/TraceIDsTooMany", `{"action":"retrieve_batch","trace_ids":[`+bigIDs+`]}`, "trace_ids must be an array of at most 100 strings"),
		bad("Batch/TraceIDsNested", `{"action":"retrieve_batch","trace_ids":[["x"]]}`, "trace_ids must be an array of at most 100 strings"),
		bad("Batch/ApplicationIDNumber", `{"action":"retrieve_batch","application_id":1}`, "application_id must be a string"),
		bad("Batch/UserIDArray", `{"action":"retrieve_batch","user_id":["u"]}`, "user_id must be a string"),
		bad("Batch/TypeBool", `{"action":"retrieve_batch","type":false}`, "type must be a string"),
		bad("Batch/CreatedMinString", `{"action":"retrieve_batch","created_at_min":"1763142607"}`, "created_at_min must be a number"),
		bad("Batch/CreatedMaxBool", `{"action":"retrieve_batch","created_at_max":true}`, "created_at_max must be a number"),
		bad("Batch/CreatedMinNegative", `{"action":"retrieve_batch","created_at_min":-1}`, "created_at_min must be a number of Unix seconds between 0 and 10000000000"),
		bad("Batch/CreatedMinTinyNegative", `{"action":"retrieve_batch","created_at_min":-1e-300}`, "created_at_min must be a number of Unix seconds between 0 and 10000000000"),
		bad("Batch/CreatedMaxHuge", `{"action":"retrieve_batch","created_at_max":1e300}`, "created_at_max must be a number of Unix seconds between 0 and 10000000000"),
		bad("Batch/CreatedMaxJustAbove", `{"action":"retrieve_batch","created_at_max":10000000000.001}`, "created_at_max must be a number of Unix seconds between 0 and 10000000000"),
		bad("Batch/CreatedMinMillis", `{"action":"retrieve_batch","created_at_min":1763142607967}`, "created_at_min must be a number of Unix seconds between 0 and 10000000000"),
		bad("Batch/Status/Unknown", `{"action":"retrieve_batch","status":"done"}`, `status must be one of "pending", "running", "succeeded", "failed"`),
		bad("Batch/Status/Case", `{"action":"retrieve_batch","status":"Failed"}`, `status must be one of "pending", "running", "succeeded", "failed"`),
		bad("Batch/Status/Number", `{"action":"retrieve_batch","status":1}`, `status must be one of "pending", "running", "succeeded", "failed"`),
		bad("Batch/Status/List", `{"action":"retrieve_batch","status":["failed"]}`, `status must be one of "pending", "running", "succeeded", "failed"`),
		bad("Batch/CallbackStatus/Unknown", `{"action":"retrieve_batch","callback_status":"gave_up"}`, `callback_status must be one of "waiting", "pending", "delivered", "failed"`),
		bad("Batch/CallbackStatus/TaskStatus", `{"action":"retrieve_batch","callback_status":"succeeded"}`, `callback_status must be one of "waiting", "pending", "delivered", "failed"`),
		bad("Batch/CallbackStatus/Number", `{"action":"retrieve_batch","callback_status":0}`, `callback_status must be one of "waiting", "pending", "delivered", "failed"`),
		bad("Batch/CallbackStatus/List", `{"action":"retrieve_batch","callback_status":["failed","pending"]}`, `callback_status must be one of "waiting", "pending", "delivered", "failed"`),
		bad("Redeliver/NoID", `{"action":"redeliver"}`, "id or ids is required"),
		bad("Redeliver/EmptyList", `{"action":"redeliver","ids":[],"id":""}`, "id or ids is required"),
		bad("Redeliver/TraceIDOnly", `{"action":"redeliver","trace_id":"my-trace-001"}`, "id or ids is required"),
		bad("Redeliver/IDNumber", `{"action":"redeliver","id":7}`, "id must be a string"),
		bad("Redeliver/IDsString", `{"action":"redeliver","ids":"x"}`, "ids must be an array of at most 100 strings"),
		bad("Redeliver/IDsTooMany", `{"action":"redeliver","ids":[`+bigIDs+`]}`, "ids must be an array of at most 100 strings"),
		bad("Redeliver/IDsNumbers", `{"action":"redeliver","ids":[1]}`, "ids must be an array of at most 100 strings"),
		bad("Batch/DuplicateLimit", `{"action":"retrieve_batch","limit":1,"limit":2}`, `duplicate key "limit" in the request body`),
	}
}

func TestWire(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(testing.TB) taskstore.Store) {
		var ids traceIDs
		for _, tc := range wireTable() {
			t.Run(tc.name, func(t *testing.T) {
				s := open(t)
				mustCreate(t, s, fixtures...)
				h := handler.New(s, handler.Tokens(tokens), tc.opts...)
				rec := serve(h, tc.call)
				if tc.code != "" {
					ids.checkError(t, rec, tc.status, tc.code, tc.msg)
					allow := rec.Header().Get("Allow")
					if tc.status == 405 && allow != "POST" {
						t.Errorf("Allow = %q, want POST", allow)
					}
					if tc.status != 405 && allow != "" {
						t.Errorf("Allow = %q on a %d", allow, tc.status)
					}
					return
				}
				if rec.Code != tc.status || rec.Body.String() != tc.body {
					t.Errorf("got %d %s\nwant %d %s", rec.Code, rec.Body, tc.status, tc.body)
				}
				if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
			})
		}
	})
}

// TestDeleteEffect checks that delete removes only what it says it removed.
func TestDeleteEffect(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(testing.TB) taskstore.Store) {
		s := open(t)
		mustCreate(t, s, fixtures...)
		h := handler.New(s, handler.Tokens(tokens))
		del := func(auth, id string) string {
			return serve(h, call{auth: auth, body: `{"action":"delete","id":"` + id + `"}`}).Body.String()
		}
		if got := del(asTenant1, taskOther.ID); !strings.Contains(got, `"deleted":false`) {
			t.Fatalf("tenant1 deleting tenant2's task: %s", got)
		}
		if _, err := s.Get(context.Background(), taskOther.ID); err != nil {
			t.Fatalf("tenant2's task after tenant1's delete: %v", err)
		}
		if got := del(asTenant1, taskFinished.ID); !strings.Contains(got, `"deleted":true`) {
			t.Fatalf("delete own: %s", got)
		}
		if _, err := s.Get(context.Background(), taskFinished.ID); !errors.Is(err, taskstore.ErrNotFound) {
			t.Fatalf("Get after delete: %v, want ErrNotFound", err)
		}
		if got := del(asTenant1, taskFinished.ID); !strings.Contains(got, `"deleted":false`) {
			t.Fatalf("second delete: %s", got)
		}
		if got := serve(h, call{auth: asTenant1, body: retrieveFinished}).Body.String(); got != "{}" {
			t.Fatalf("retrieve after delete: %s", got)
		}
	})
}

// TestStoreErrors: a store failure answers 500 without leaking anything and
// is logged with the answer's trace_id; ErrInvalid answers its reason;
// ErrUnavailable answers 503 with Retry-After.
func TestStoreErrors(t *testing.T) {
	secret := errors.New("sqlite: disk I/O error at /var/lib/secret/tasks.db: SELECT * FROM tasks")
	var ids traceIDs
	for _, body := range []string{
		retrieveFinished,
		`{"trace_id":"my-trace-001"}`,
		`{"action":"retrieve_batch"}`,
		`{"action":"delete","id":"x"}`,
	} {
		t.Run("Internal/"+body, func(t *testing.T) {
			var logs bytes.Buffer
			h := handler.New(brokenStore{err: fmt.Errorf("wrapped: %w", secret)}, handler.InsecureAnyoneIsOperator,
				handler.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
			rec := serve(h, call{auth: "Bearer anything", body: body})
			id := ids.checkError(t, rec, 500, "api_error", "internal error; quote trace_id when reporting it")
			if strings.Contains(rec.Body.String(), "secret") {
				t.Errorf("the answer leaks the store error: %s", rec.Body)
			}
			var entry struct {
				Level   string `json:"level"`
				TraceID string `json:"trace_id"`
				Err     string `json:"err"`
			}
			if err := json.Unmarshal(logs.Bytes(), &entry); err != nil {
				t.Fatalf("log %q: %v", logs.String(), err)
			}
			if entry.Level != "ERROR" || entry.TraceID != id || !strings.Contains(entry.Err, "disk I/O") {
				t.Errorf("log entry %s does not carry the error and trace_id %s", logs.String(), id)
			}
		})
	}
	t.Run("Invalid", func(t *testing.T) {
		h := handler.New(brokenStore{err: fmt.Errorf("find: %w", storekit.Invalidf("ids must be short"))},
			handler.InsecureAnyoneIsOperator)
		rec := serve(h, call{auth: "Bearer x", body: `{"action":"retrieve_batch"}`})
		ids.checkError(t, rec, 400, "bad_request", "ids must be short")
		rec = serve(handler.New(brokenStore{err: taskstore.ErrInvalid}, handler.InsecureAnyoneIsOperator),
			call{auth: "Bearer x", body: `{"action":"retrieve_batch"}`})
		ids.checkError(t, rec, 400, "bad_request", "the request is invalid")
	})
	// A store that cannot reach its data answers 503 with Retry-After, on
	// every action, and is logged as a warning, not an internal error.
	for _, body := range []string{retrieveFinished, `{"trace_id":"t"}`, `{"action":"retrieve_batch"}`,
		`{"action":"delete","id":"x"}`, `{"action":"redeliver","id":"x"}`} {
		t.Run("Unavailable/"+body, func(t *testing.T) {
			var logs bytes.Buffer
			down := fmt.Errorf("pgstore: get: failed to connect to 10.1.2.3:5432: %w", taskstore.ErrUnavailable)
			h := handler.New(brokenStore{err: down}, handler.InsecureAnyoneIsOperator,
				handler.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
			rec := serve(h, call{auth: "Bearer x", body: body})
			id := ids.checkError(t, rec, 503, "api_error", "the task store is unavailable; retry later")
			if got := rec.Header().Get("Retry-After"); got != "2" {
				t.Errorf("Retry-After %q, want 2", got)
			}
			if strings.Contains(rec.Body.String(), "10.1.2.3") {
				t.Errorf("the answer leaks the store error: %s", rec.Body)
			}
			if !strings.Contains(logs.String(), `"level":"WARN"`) || !strings.Contains(logs.String(), id) {
				t.Errorf("log %s: want a warning with trace_id %s", logs.String(), id)
			}
		})
	}
	t.Run("Cancelled", func(t *testing.T) {
		var logs bytes.Buffer
		h := handler.New(brokenStore{err: fmt.Errorf("get: %w", context.Canceled)}, handler.InsecureAnyoneIsOperator,
			handler.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, call{auth: "Bearer x", body: retrieveFinished}.request().WithContext(ctx))
		ids.checkError(t, rec, 500, "api_error", "the request was cancelled")
		if logs.Len() != 0 {
			t.Errorf("a cancelled request is logged as an error: %s", logs.String())
		}
	})
}

// TestAuthUnavailable: an authenticator that cannot decide answers 500,
// logged; other errors 401.
func TestAuthUnavailable(t *testing.T) {
	var ids traceIDs
	var logs bytes.Buffer
	down := func(*http.Request) (taskstore.Principal, error) {
		return taskstore.Principal{}, fmt.Errorf("token service: %w", handler.ErrAuthUnavailable)
	}
	h := handler.New(brokenStore{}, down, handler.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
	rec := serve(h, call{auth: "Bearer x", body: retrieveFinished})
	id := ids.checkError(t, rec, 500, "api_error", "internal error; quote trace_id when reporting it")
	if !strings.Contains(logs.String(), id) || !strings.Contains(logs.String(), "token service") {
		t.Errorf("log %s lacks trace_id %s or the error", logs.String(), id)
	}
	rejected := func(*http.Request) (taskstore.Principal, error) { return taskstore.Principal{}, errors.New("expired") }
	rec = serve(handler.New(brokenStore{}, rejected), call{auth: "Bearer x", body: retrieveFinished})
	ids.checkError(t, rec, 401, "invalid_token", "the token is not accepted")
}

// TestNewRequiresAuthenticator: secure by default.
func TestNewRequiresAuthenticator(t *testing.T) {
	for name, fn := range map[string]func(){
		"NilAuth":         func() { handler.New(memstore.New(), nil) },
		"NilStore":        func() { handler.New(nil, handler.InsecureAnyoneIsOperator) },
		"AuthenticateNil": func() { handler.Authenticate(nil, http.NotFoundHandler()) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil {
					t.Fatal("no panic")
				}
				if name == "NilAuth" && !strings.Contains(fmt.Sprint(r), "InsecureAnyoneIsOperator") {
					t.Errorf("panic %q does not point at InsecureAnyoneIsOperator", r)
				}
			}()
			fn()
		})
	}
}

// TestOverHTTP runs requests through a real server: the answer on the wire
// has no trailing newline and the right headers.
func TestOverHTTP(t *testing.T) {
	s := backends[0].open(t)
	mustCreate(t, s, fixtures...)
	mux := http.NewServeMux()
	mux.Handle("/openai/tasks", handler.New(s, handler.Tokens(tokens), typesOpenAI))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	post := func(method, body string) (*http.Response, string) {
		req, err := http.NewRequest(method, srv.URL+"/openai/tasks", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", asTenant1)
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}
	resp, body := post("POST", retrieveFinished)
	if resp.StatusCode != 200 || body != wireFinished || resp.Header.Get("Content-Type") != "application/json" ||
		resp.ContentLength != int64(len(wireFinished)) {
		t.Errorf("retrieve: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = post("POST", `{"id":"nope"}`)
	if resp.StatusCode != 200 || body != "{}" {
		t.Errorf("not found: %d %q", resp.StatusCode, body)
	}
	resp, body = post("GET", "")
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" || !strings.HasPrefix(body, `{"error":{"code":"bad_request"`) {
		t.Errorf("GET: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = post("POST", `{"action":"retrieve_batch","padding":"`+strings.Repeat("x", 2<<20)+`"}`)
	if resp.StatusCode != 400 || !strings.Contains(body, "at most 1048576 bytes") {
		t.Errorf("2 MiB body: %d %q", resp.StatusCode, body)
	}
}

// TestAuthenticate covers the middleware for the image endpoints.
func TestAuthenticate(t *testing.T) {
	var ids traceIDs
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := taskstore.FromContext(r.Context())
		fmt.Fprintf(w, "%v %+v", ok, p)
	})
	h := handler.Authenticate(handler.Tokens(tokens), next)
	rec := serve(h, call{auth: asTenant1})
	if rec.Code != 200 || rec.Body.String() != fmt.Sprintf("true %+v", tenant1) {
		t.Errorf("accepted: %d %s", rec.Code, rec.Body)
	}
	ids.checkError(t, serve(h, call{}), 400, "no_token", "the authorization header is missing")
	ids.checkError(t, serve(h, call{auth: "Bearer nope"}), 401, "invalid_token", "the token is not accepted")
	down := func(*http.Request) (taskstore.Principal, error) {
		return taskstore.Principal{}, handler.ErrAuthUnavailable
	}
	ids.checkError(t, serve(handler.Authenticate(down, next), call{auth: "Bearer x"}), 500, "api_error",
		"internal error; quote trace_id when reporting it")
}

// TestContentLength: every successful answer carries its length, so that a
// batch larger than net/http's 2 KiB buffer is not sent chunked.
func TestContentLength(t *testing.T) {
	s := memstore.New()
	t.Cleanup(func() { s.Close() })
	for i := range 20 {
		err := s.Create(context.Background(), taskstore.Task{
			ID: fmt.Sprintf("task-%02d", i), Type: "images_generations", UserID: "u",
			Request: json.RawMessage(`{"prompt":"` + strings.Repeat("x", 300) + `"}`),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(handler.New(s, handler.InsecureAnyoneIsOperator))
	t.Cleanup(srv.Close)
	for _, body := range []string{
		`{"action":"retrieve","id":"task-00"}`,
		`{"action":"retrieve","id":"missing"}`,
		`{"action":"retrieve_batch","user_id":"u","limit":20}`,
	} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer any")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(got)) || len(resp.TransferEncoding) != 0 {
			t.Errorf("%s: status %d, Content-Length %d, Transfer-Encoding %v for %d bytes",
				body, resp.StatusCode, resp.ContentLength, resp.TransferEncoding, len(got))
		}
	}
}

// A body that cannot be read (the client went away, a broken chunked
// encoding) is answered 400 and nothing is looked up.
func TestBodyReadError(t *testing.T) {
	s := backends[0].open(t)
	mustCreate(t, s, fixtures...)
	h := handler.New(s, handler.Tokens(tokens))
	r := httptest.NewRequest(http.MethodPost, "/openai/tasks",
		io.MultiReader(strings.NewReader(retrieveFinished[:10]), iotest.ErrReader(errors.New("connection reset"))))
	r.ContentLength = -1
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", asTenant1)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	var ids traceIDs
	ids.checkError(t, rec, http.StatusBadRequest, "bad_request", "the request body could not be read")
}

// TestPageBytes: a retrieve_batch answer stops adding items once their
// requests and responses reach the byte budget, with the same count; a
// client that goes on from offset + len(items) gets every task once.
func TestPageBytes(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(testing.TB) taskstore.Store) {
		s := open(t)
		const n, size = 25, 1000
		for i := range n {
			mustCreate(t, s, taskstore.Task{
				ID: fmt.Sprintf("heavy-%02d", i), Type: "images_generations",
				Request: json.RawMessage(`{"prompt":"` + strings.Repeat("x", size-len(`{"prompt":""}`)) + `"}`),
			})
		}
		h := handler.New(s, handler.InsecureAnyoneIsOperator, handler.WithPageBytes(3500))
		seen := map[string]bool{}
		offset, pages := 0, 0
		for {
			rec := serve(h, call{auth: "Bearer x", body: fmt.Sprintf(`{"action":"retrieve_batch","limit":100,"offset":%d}`, offset)})
			var a struct {
				Items []struct{ ID string } `json:"items"`
				Count int                   `json:"count"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil || rec.Code != 200 {
				t.Fatalf("%d %s: %v", rec.Code, rec.Body, err)
			}
			if a.Count != n {
				t.Fatalf("count %d, want %d (the whole match, whatever the page holds)", a.Count, n)
			}
			if len(a.Items) > 4 || (offset+len(a.Items) < n && len(a.Items) != 4) {
				t.Fatalf("offset %d: %d items of %d bytes under a 3500-byte budget, want 4 (3 fill 3000 bytes, the 4th crosses)", offset, len(a.Items), size)
			}
			for _, it := range a.Items {
				if seen[it.ID] {
					t.Fatalf("%s listed twice", it.ID)
				}
				seen[it.ID] = true
			}
			pages++
			offset += len(a.Items)
			if offset >= a.Count {
				break
			}
		}
		if len(seen) != n || pages != 7 {
			t.Fatalf("%d tasks in %d answers, want %d in 7", len(seen), pages, n)
		}
	})
}
