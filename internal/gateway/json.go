package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// decode reads exactly one JSON object into v, refusing unknown fields (a
// client must not believe it set "role" or "fare" when nothing read it),
// trailing data and wrong types, each with a message that names the problem.
func decode(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return apperr.E(apperr.Invalid, "unsupported_media_type", "the body must be application/json")
		}
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return decodeError(err)
		}
		return apperr.E(apperr.Invalid, "", "the body must hold a single JSON object")
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
		return apperr.E(apperr.Invalid, "unknown_field", "unknown field %s", msg[len(prefix):])
	}
	return apperr.Wrap(err, apperr.Invalid, "", "the body is not valid JSON")
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
