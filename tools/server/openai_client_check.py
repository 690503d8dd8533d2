"""Drives a running `phi3 serve` with the official OpenAI Python client.

Usage: openai_client_check.py BASE_URL API_KEY

Exits non-zero, naming the failed check, if the server does not behave as
the OpenAI API does for this client: chat (whole and streamed, with usage),
stop strings, logprobs, the completions API, models, and errors raised as
the client's typed exceptions.
"""

import sys
import threading

import openai


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def main():
    base, key = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)

    models = client.models.list()
    ids = [m.id for m in models.data]
    check(len(ids) == 1, f"one model listed: {ids}")
    model = ids[0]

    messages = [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name three rivers."},
    ]
    whole = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=16)
    check(whole.object == "chat.completion", "chat.completion object")
    choice = whole.choices[0]
    check(choice.message.role == "assistant", "assistant role")
    check(choice.finish_reason in ("stop", "length"), f"finish_reason {choice.finish_reason}")
    check(whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens, "usage sums")
    text = choice.message.content

    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        temperature=0,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        check(chunk.object == "chat.completion.chunk", "chunk object")
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    check("".join(pieces) == text, f"streamed text {''.join(pieces)!r} == whole text {text!r}")
    check(finish == choice.finish_reason, "same finish reason streamed")
    check(usage is not None and usage.completion_tokens == whole.usage.completion_tokens, "usage chunk")

    if len(text) > 4:
        stop = text[3:5]
        cut = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=16, stop=[stop])
        check(cut.choices[0].message.content == text[: text.index(stop)], "text cut before the stop string")
        check(cut.choices[0].finish_reason == "stop", "stop string finish reason")

    lp = client.chat.completions.create(
        model=model, messages=messages, temperature=0, max_tokens=4, logprobs=True, top_logprobs=2
    )
    entries = lp.choices[0].logprobs.content
    check(len(entries) > 0 and all(len(e.top_logprobs) == 2 for e in entries), "logprobs with top_logprobs")

    done = client.completions.create(model=model, prompt="Once upon a time", max_tokens=8, temperature=0.7, seed=5)
    again = client.completions.create(model=model, prompt="Once upon a time", max_tokens=8, temperature=0.7, seed=5)
    check(done.object == "text_completion", "text_completion object")
    check(done.choices[0].text == again.choices[0].text, "a seed makes sampling repeatable")

    # errors arrive as the client's typed exceptions
    try:
        client.chat.completions.create(model=model, messages=messages, temperature=9)
        check(False, "temperature 9 refused")
    except openai.BadRequestError as e:
        check("temperature" in str(e), f"the error names the field: {e}")
    try:
        client.chat.completions.create(model=model, messages=messages, n=3)
        check(False, "n=3 refused")
    except openai.BadRequestError:
        pass
    try:
        openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).models.list()
        check(False, "a wrong key refused")
    except openai.AuthenticationError:
        pass

    # several clients at once, each with the answer it gets alone
    results = {}

    def ask(i):
        r = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"Count to {i}."}],
            temperature=0,
            max_tokens=6,
        )
        results[i] = r.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        alone = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"Count to {i}."}], temperature=0, max_tokens=6
        )
        check(results.get(i) == alone.choices[0].message.content, f"concurrent answer {i} equals the lone one")
    print("openai client checks passed")


if __name__ == "__main__":
    main()
