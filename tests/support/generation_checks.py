"""Checks both servers' generation endpoints must pass (the edge agent and the cloud worker speak
the same protocol): what the unmodified tritonclient saw over ModelStreamInfer and ModelInfer, and
the HTTP generate extension driven with plain aiohttp (server-sent events read off the wire)."""

from __future__ import annotations

import asyncio
import json

import aiohttp


def check_tritonclient_streams(seen: dict, *, prompt: str, expected: str, max_tokens: int, variant: str) -> None:
    """``seen`` is triton_stream_check.py's output; ``expected`` the greedy text of ``max_tokens``
    tokens as the runtime computes it in-process."""
    meta = seen["model_metadata"]
    names = {item["name"]: item for item in meta["inputs"]}
    assert set(names) == {"text_input", "stream", "sampling_parameters", "exclude_input_in_output"}
    assert meta["outputs"][0]["name"] == "text_output"

    stream = seen["stream"]
    assert len(stream) > 1, "a stream answers one response per chunk"
    finals = [item["parameters"]["triton_final_response"] for item in stream]
    assert finals == [False] * (len(stream) - 1) + [True]
    assert "".join(item["text"] for item in stream) == expected
    assert all(item["id"] == "r0" for item in stream)
    last = stream[-1]["parameters"]
    assert last["completion_tokens"] <= max_tokens and last["finish_reason"] in ("stop", "length")
    assert last["prompt_tokens"] > 0
    assert all(item["parameters"]["variant"] == variant for item in stream)

    empty_final = seen["stream_empty_final"]
    assert empty_final[-1]["text"] == "" and empty_final[-1]["parameters"]["triton_final_response"] is True
    assert not any(item["parameters"]["triton_final_response"] for item in empty_final[:-1])
    assert "".join(item["text"] for item in empty_final) == expected

    (whole,) = seen["stream_false"]
    assert whole["parameters"]["triton_final_response"] is True
    assert whole["text"] == prompt + expected  # the prompt leads unless exclude_input_in_output

    bad_key, bad_json, *good = seen["bad_then_good"]
    errors = sorted([bad_key, bad_json], key=lambda item: "temprature" in item.get("error", ""))
    assert "sampling_parameters" in errors[0]["error"] and "JSON" in errors[0]["error"]
    assert "temprature" in errors[1]["error"]
    assert "".join(item["text"] for item in good) == expected

    cancelled = seen["cancelled"]
    assert len(cancelled) == 3 and not any(item["parameters"].get("triton_final_response") for item in cancelled)

    assert seen["unary"]["text"] == expected and seen["unary"]["id"] == "u1"
    assert seen["unary"]["parameters"]["triton_final_response"] is True
    assert seen["unary_with_prompt"]["text"] == prompt + expected
    assert seen["unary_stream_true"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "ModelStreamInfer" in seen["unary_stream_true"]["error"]
    assert "".join(item["text"] for item in seen["aio"]) == expected


async def sse_events(response: aiohttp.ClientResponse) -> list[dict]:
    """The ``data:`` events of a server-sent-event body, parsed."""
    events, buffer = [], b""
    async for block in response.content.iter_any():
        buffer += block
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            assert event.startswith(b"data: "), event
            events.append(json.loads(event[len(b"data: "):]))
    assert buffer == b""
    return events


async def check_http_generate(base: str, model: str, *, prompt: str, expected: str, max_tokens: int) -> None:
    """generate and generate_stream, and their bad-input answers, over plain HTTP."""
    greedy = {"max_tokens": max_tokens, "temperature": 0}
    async with aiohttp.ClientSession() as session:
        url = f"{base}/v2/models/{model}"
        async with session.post(f"{url}/generate", json={"text_input": prompt, "exclude_input_in_output": True,
                                                         "sampling_parameters": greedy, "id": "h1"}) as response:
            assert response.status == 200, await response.text()
            body = await response.json()
        assert body["text_output"] == expected and body["id"] == "h1" and body["model_name"] == model
        assert body["finish_reason"] in ("stop", "length") and body["completion_tokens"] <= max_tokens

        # Triton's form: sampling keys and the stream flag inside "parameters".
        async with session.post(f"{url}/generate_stream", json={
                "text_input": prompt, "parameters": {"stream": True, "max_tokens": max_tokens, "temperature": 0}}) \
                as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            events = await sse_events(response)
        assert len(events) > 1 and "".join(e["text_output"] for e in events) == expected
        assert [e["triton_final_response"] for e in events] == [False] * (len(events) - 1) + [True]

        bad_bodies = {
            "unknown sampling key": ({"text_input": prompt, "sampling_parameters": {"temprature": 1}}, 400,
                                     "temprature"),
            "ill-typed sampling": ({"text_input": prompt, "sampling_parameters": {"max_tokens": "many"}}, 400,
                                   "max_tokens"),
            "sampling not JSON": ({"text_input": prompt, "sampling_parameters": "{oops"}, 400,
                                  "sampling_parameters"),
            "max_tokens over the limit": ({"text_input": prompt, "sampling_parameters": {"max_tokens": 10**6}}, 400,
                                          "max_tokens"),
            "empty prompt": ({"text_input": ""}, 400, "text_input"),
            "missing prompt": ({"exclude_input_in_output": True}, 400, "text_input"),
            "prompt over the context": ({"text_input": "hello " * 9000}, 400, "text_input"),
            "unknown input": ({"text_input": prompt, "colour": "blue"}, 400, "colour"),
        }
        for what, (payload, status, field) in bad_bodies.items():
            for route in ("generate", "generate_stream"):
                async with session.post(f"{url}/{route}", json=payload) as response:
                    text = await response.text()
                    assert response.status == status, (what, route, text)
                    assert field in json.loads(text)["error"], (what, route, text)
        async with session.post(f"{url}/generate", json={"text_input": prompt, "stream": True}) as response:
            assert response.status == 400 and "generate_stream" in (await response.json())["error"]
        async with session.post(f"{url}/generate", data=b'{"text_input": "\xff\xfe"}',
                                headers={"Content-Type": "application/json"}) as response:
            assert response.status == 400 and "UTF-8" in (await response.json())["error"]
        async with session.post(f"{base}/v2/models/no-such-model/generate_stream",
                                json={"text_input": prompt}) as response:
            assert response.status == 404


async def disconnect_mid_stream(base: str, model: str, prompt: str, times: int) -> None:
    """Start long streams and walk away after the first event, ``times`` times."""
    payload = {"text_input": prompt, "stream": True, "sampling_parameters": {"max_tokens": 400, "temperature": 0}}
    for _ in range(times):
        async with aiohttp.ClientSession() as session:
            response = await session.post(f"{base}/v2/models/{model}/generate_stream", json=payload)
            await response.content.readuntil(b"\n\n")
            response.close()  # drop the connection mid-stream
        await asyncio.sleep(0)
