"""Regenerates tests/fixtures/openai-schemas.json from OpenAI's OpenAPI description.

usage: python3 tests/sdk/python/vendor_schemas.py PATH/TO/openai-openapi.json
Keeps only the schemas the conformance tests validate against, with everything they reference.
"""

import json
import sys

WANT = ["CreateChatCompletionResponse", "CreateChatCompletionStreamResponse", "CreateEmbeddingResponse",
        "ListModelsResponse", "ErrorResponse", "CreateCompletionResponse", "Response", "ResponseStreamEvent"]


def refs(o, acc):
    if isinstance(o, dict):
        for k, v in o.items():
            if k == "$ref" and isinstance(v, str):
                acc.add(v.split("/")[-1])
            else:
                refs(v, acc)
    elif isinstance(o, list):
        for x in o:
            refs(x, acc)


def main(src):
    schemas = json.load(open(src))["components"]["schemas"]
    seen, todo = set(), list(WANT)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        acc = set()
        refs(schemas[n], acc)
        todo += list(acc - seen)
    out = {
        "$comment": "Vendored from OpenAI's OpenAPI description (openai/openai-openapi, commit f85dbe22, "
                    "2026-08-21; copy in shared/reference/openai-openapi.json): components.schemas needed to "
                    "validate " + ", ".join(WANT) + " and everything they reference. Regenerate with "
                    "tests/sdk/python/vendor_schemas.py.",
        "components": {"schemas": {k: schemas[k] for k in sorted(seen)}},
    }
    json.dump(out, open("tests/fixtures/openai-schemas.json", "w"), indent=1, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1])
