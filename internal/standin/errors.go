package standin

import (
	"errors"
	"fmt"
	"net/http"
)

// Error types of OpenAI's error body.
const (
	typeInvalid = "invalid_request_error"
	typeAPI     = "api_error"
)

// apiError is an OpenAI-style error answer:
//
//	{"error":{"message":"…","type":"…","param":"…"|null,"code":"…"|null}}
type apiError struct {
	status  int
	message string
	typ     string
	param   string // "" is null
	code    string // "" is null
}

func (e *apiError) Error() string { return e.message }

// invalid is a 400 invalid_request_error about param ("" for none).
func invalid(param, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: typeInvalid, param: param, message: fmt.Sprintf(format, args...)}
}

type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, e *apiError) {
	var b errorBody
	b.Error.Message = e.message
	b.Error.Type = e.typ
	if e.param != "" {
		b.Error.Param = &e.param
	}
	if e.code != "" {
		b.Error.Code = &e.code
	}
	writeJSON(w, e.status, b)
}

// bodyError turns an error met while reading a request body into an
// answer: 413 for a body over the limit, 400 otherwise.
func bodyError(err error) *apiError {
	if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return &apiError{status: http.StatusRequestEntityTooLarge, typ: typeInvalid,
			message: fmt.Sprintf("The request body is too large; the limit is %d bytes.", mbe.Limit)}
	}
	if e, ok := errors.AsType[*apiError](err); ok {
		return e
	}
	return invalid("", "The request body could not be read.")
}
