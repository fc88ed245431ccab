package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sync"
	"unicode/utf8"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// Limits on a JSON body. maxBody matches the server's limit (which answers
// 413 before a handler runs when Content-Length says so); decode enforces it
// again for bodies without a length. maxDepth is far beyond any body the
// API takes (three levels) and far below what makes a decoder work hard.
const (
	maxBody  = 1 << 20
	maxDepth = 32
)

// decode reads exactly one JSON object into v, refusing unknown fields (a
// client must not believe it set "role" or "fare" when nothing read it),
// trailing data, wrong types and nesting deeper than maxDepth, each with a
// message that names the problem. Every error it returns is Invalid or
// TooLarge.
func decode(r *http.Request, v any) error {
	// The exact type every client sends skips the parser, which allocates.
	if ct := r.Header.Get("Content-Type"); ct != "" && ct != "application/json" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return apperr.E(apperr.Invalid, "unsupported_media_type", "the body must be application/json")
		}
	}
	buf := bodyBuffers.Get().(*bytes.Buffer)
	defer putBodyBuffer(buf)
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, maxBody+1)); err != nil {
		return decodeError(err)
	}
	if buf.Len() > maxBody {
		return apperr.E(apperr.TooLarge, "", "the body exceeds %d bytes", maxBody)
	}
	return decodeBytes(buf.Bytes(), v)
}

// bodyBuffers hold request bodies while they are decoded (the decoder
// copies out everything it keeps), so that a request does not allocate
// its body's buffer.
var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBody bounds the buffers kept: a rare large body is not worth
// holding on to.
const maxPooledBody = 64 << 10

func putBodyBuffer(b *bytes.Buffer) {
	if b.Cap() > maxPooledBody {
		return
	}
	b.Reset()
	bodyBuffers.Put(b)
}

// decodeBytes is decode after the body is read: the part the fuzz target
// drives.
func decodeBytes(body []byte, v any) error {
	// The depth is checked before decoding, so a body of a million "["
	// costs one pass over its bytes, not a million nested decoder frames.
	if err := checkDepth(body, maxDepth); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if len(bytes.TrimLeft(body[dec.InputOffset():], " \t\r\n")) == 0 {
		return nil // nothing after the object: no need to ask the decoder
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return decodeError(err)
		}
		return apperr.E(apperr.Invalid, "", "the body must hold a single JSON object")
	}
	return nil
}

// checkDepth refuses JSON whose objects and arrays nest deeper than max. It
// only counts brackets outside strings; whether the JSON is well formed is
// the decoder's business.
func checkDepth(b []byte, max int) error {
	depth, inString, escaped := 0, false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString:
			switch c {
			case '\\':
				escaped = true
			case '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			if depth > max {
				return apperr.E(apperr.Invalid, "too_deep", "the JSON nests deeper than %d levels", max)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}

func decodeError(err error) error {
	var (
		syntax    *json.SyntaxError
		typ       *json.UnmarshalTypeError
		tooLarge  *http.MaxBytesError
		unmarshal *json.InvalidUnmarshalError
	)
	switch {
	case errors.As(err, &tooLarge):
		return apperr.E(apperr.TooLarge, "", "the body exceeds %d bytes", tooLarge.Limit)
	case errors.Is(err, io.EOF):
		return apperr.E(apperr.Invalid, "", "the body is empty; a JSON object is required")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return apperr.E(apperr.Invalid, "", "the body ends in the middle of the JSON")
	case errors.As(err, &syntax):
		return apperr.E(apperr.Invalid, "", "malformed JSON at byte %d", syntax.Offset)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return apperr.E(apperr.Invalid, "", "the body must be a JSON object")
		}
		return apperr.E(apperr.Invalid, "", "field %q must be %s", typ.Field, jsonKind(typ.Type.Kind().String()))
	case errors.As(err, &unmarshal):
		return fmt.Errorf("gateway: decode target: %w", err)
	}
	// The decoder reports unknown fields only as text: `json: unknown field "x"`.
	const prefix = "json: unknown field "
	if msg := err.Error(); len(msg) > len(prefix) && msg[:len(prefix)] == prefix {
		return apperr.E(apperr.Invalid, "unknown_field", "unknown field %s", clip(msg[len(prefix):], 80))
	}
	return apperr.Wrap(err, apperr.Invalid, "", "the body is not valid JSON")
}

// clip shortens s, which a client chose, before it is echoed in a message.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "struct", "map":
		return "an object"
	case "slice", "array":
		return "an array"
	case "float32", "float64", "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "a number"
	}
	return "of another type"
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}
