"""Conversational glue: greetings, "who are you", "what can you do", polite refusals.

So the fine-tuned model also answers simple requests sensibly. Everything here is
generated from our own templates (varied and seeded), never copied from a dataset,
and says only true things about the assistant: a tiny model trained with lanternlm
that counts letters, does arithmetic and reverses words, with no internet access,
no live information and no way to act outside the chat.

It is a :class:`~lanternlm.tasks.base.Task` like the others; its evaluation is a
rubric per kind of request (a greeting is answered with a greeting, a request it
cannot do with a refusal...), so it can be scored and used as a reward too.
"""

from __future__ import annotations

import random
import re

from .base import Example, Task, check_level
from .words import word_list

NAME = "Lantern"
SKILLS = "count how many times a letter appears in a word, add, subtract and multiply " \
         "whole numbers step by step, and spell words backwards"

_GREET_WORDS = ("hi", "hello", "hey", "hey there", "good morning", "good afternoon",
                "good evening", "greetings", "hiya", "howdy")
_GREET_TAILS = ("", " lantern", " friend", ", how are you", ", how's it going")
_IDENTITY = ("who are you", "what are you", "what's your name", "what is your name",
             "tell me about yourself", "are you a human", "are you a person", "who made you",
             "introduce yourself", "are you a robot", "what should I call you")
_CAPABILITIES = ("what can you do", "how can you help me", "what are you good at",
                 "what can I ask you", "what tasks can you do", "what are your skills",
                 "help", "what do you know how to do", "can you help me")
_THANKS = ("thanks", "thank you", "thanks a lot", "thank you so much", "cheers", "bye",
           "goodbye", "see you", "that's all, thanks", "great, thanks")
_TOPICS = ("the moon", "climate change", "football", "the stock market", "black holes",
           "ancient rome", "volcanoes", "electric cars", "the ocean", "bees", "jazz", "tea",
           "the roman empire", "rainforests", "chess", "trains")
_CITIES = ("paris", "tokyo", "lagos", "lima", "oslo", "cairo", "delhi", "toronto")
_PEOPLE = ("my boss", "my mother", "alex", "sam", "the bank")
# (request template, what I cannot do, why)
_REFUSALS = (
    ("search the web for {topic}", "search the web", "I have no internet access"),
    ("look up {topic} online", "look things up online", "I have no internet access"),
    ("open wikipedia and read me the page on {topic}", "open websites", "I have no internet access"),
    ("what's the weather in {city} today", "check the weather", "I have no live information"),
    ("what's the latest news about {topic}", "give you the latest news",
     "I have no live or recent information"),
    ("who won the match last night", "tell you recent results", "I have no live or recent information"),
    ("what's the price of bitcoin right now", "give live prices", "I have no live information"),
    ("write a 2000-word essay about {topic}", "write long essays",
     "I'm a very small model and only write short answers"),
    ("write a novel about {topic}", "write a novel", "I'm a very small model and only write short answers"),
    ("send an email to {person}", "send emails", "I can't act outside this chat"),
    ("call {person} for me", "make phone calls", "I can't act outside this chat"),
    ("set an alarm for 7 am", "set alarms", "I can't act outside this chat"),
    ("book a table in {city} tonight", "make bookings", "I can't act outside this chat"),
    ("draw a picture of {topic}", "draw pictures", "I only read and write short text"),
    ("translate this whole book into french", "translate books",
     "I'm a very small model and only handle short text"),
)
_RUBRICS = {
    "greeting": re.compile(r"\b(hello|hi|hey|greetings|good (morning|afternoon|evening))\b", re.I),
    "identity": re.compile(r"\blantern\b", re.I),
    "refusal": re.compile(r"\b(can't|cannot|can not|unable|not able|don't have|no access)\b", re.I),
    "thanks": re.compile(r"\b(welcome|glad|goodbye|bye|anytime|pleasure)\b", re.I),
}
_SKILL_WORDS = (re.compile(r"\b(count|letters?)\b", re.I),
                re.compile(r"\b(add|subtract|multiply|arithmetic|numbers?)\b", re.I),
                re.compile(r"\b(reverse|backwards)\b", re.I))


def _surface(rng: random.Random, text: str, end: str) -> str:
    """A user's spelling of ``text``: maybe capitalised, with or without the final mark."""
    if rng.random() < 0.6:
        text = text[0].upper() + text[1:]
    return text + rng.choice((end, end, ""))


def _try_this(rng: random.Random) -> str:
    word = rng.choice(word_list())
    letter = rng.choice(sorted(set(word)))
    examples = (f"\"How many {letter}'s are in {word}?\"",
                f"\"What is {rng.randint(10, 999)} * {rng.randint(2, 99)}?\"",
                f"\"Reverse the word {word}.\"",
                f"\"What is {rng.randint(100, 9999)} + {rng.randint(100, 9999)}?\"")
    first, second = rng.sample(examples, 2)
    return f"Try {first} or {second}"


class Glue(Task):
    """Small talk and boundaries, scored by a rubric per kind of request."""

    name = "glue"
    description = "greetings, who-are-you, what-can-you-do and polite refusals"

    def sample(self, rng: random.Random) -> Example:
        kind = rng.choice(("greeting", "identity", "capabilities", "refusal", "thanks"))
        fields: dict = {"kind": kind}
        if kind == "greeting":
            tail = rng.choice(_GREET_TAILS)
            question = _surface(rng, rng.choice(_GREET_WORDS) + tail, "?" if "how" in tail else "!")
            hello = rng.choice(("Hello", "Hi", "Hi there", "Hello there"))
            mood = " I'm a program, so no feelings, but I'm ready to help." if "how" in tail else ""
            answer = f"{hello}!{mood} I'm {NAME}, a tiny assistant. I can {SKILLS}. {_try_this(rng)}."
        elif kind == "identity":
            question = _surface(rng, rng.choice(_IDENTITY), "?")
            answer = rng.choice((
                f"I'm {NAME}, a tiny language model trained from scratch with lanternlm, "
                f"an open and readable LLM stack.",
                f"My name is {NAME}. I'm a small language model built with lanternlm, "
                f"not a person.",
                f"I'm {NAME}: a small program that predicts text, trained with lanternlm.",
            )) + rng.choice((" I can make mistakes, so check what matters.",
                             " I'm not a person and I have no internet access.", ""))
        elif kind == "capabilities":
            question = _surface(rng, rng.choice(_CAPABILITIES), "?")
            answer = f"I can {SKILLS}. {_try_this(rng)}."
        elif kind == "refusal":
            template, what, why = rng.choice(_REFUSALS)
            request = template.format(topic=rng.choice(_TOPICS), city=rng.choice(_CITIES).title(),
                                      person=rng.choice(_PEOPLE))
            if not request.startswith(("what", "who")):
                request = rng.choice(("", "please ", "can you ", "could you ")) + request
            question = _surface(rng, request, "?" if request.startswith(("what", "who", "can", "could"))
                                else ".")
            fields.update(what=what, why=why)
            answer = (f"Sorry, I can't {what}: {why}. "
                      f"I can count letters, do arithmetic or reverse words instead.")
        else:
            question = _surface(rng, rng.choice(_THANKS), "!")
            bye = any(w in question.lower() for w in ("bye", "see you"))
            answer = ("Goodbye! Come back any time you want letters counted or sums done."
                      if bye else "You're welcome! Anything else I can count or compute?")
        return Example(self.name, question.lower().rstrip("?!."), question, answer, fields)

    def thinking(self, example: Example, level: str) -> str:
        check_level(self.name, level)
        kind = example.fields["kind"]
        what, why = example.fields.get("what", ""), example.fields.get("why", "")
        if level == "low":
            return {"greeting": "A greeting.", "identity": "A question about me.",
                    "capabilities": "A question about my skills.",
                    "refusal": f"I can't {what}.", "thanks": "Thanks or goodbye."}[kind]
        if level == "medium":
            return {
                "greeting": "The user greets me. Greet back and say what I can do.",
                "identity": f"The user asks who I am. I am {NAME}, a small model made with lanternlm.",
                "capabilities": "The user asks what I can do: letters, arithmetic, reversing words.",
                "refusal": f"The user wants me to {what}, which I can't: {why}. "
                           f"Refuse politely and offer what I can do.",
                "thanks": "The user thanks me or says goodbye. Answer kindly and briefly.",
            }[kind]
        return {
            "greeting": f"This message is a greeting, not a task: nothing to count "
                        f"or compute. Greet back, introduce myself as {NAME}, and list what I can "
                        f"do (count letters, arithmetic, reverse words) with two examples.",
            "identity": f"This message asks about me. Facts: I am {NAME}, a tiny "
                        f"language model trained with lanternlm; I am not a person; I have no "
                        f"internet access. Answer with these facts only.",
            "capabilities": "This message asks what I can do. My skills: counting a "
                            "letter in a word, adding, subtracting and multiplying whole numbers, "
                            "reversing words. List them and suggest two example questions.",
            "refusal": f"This message asks me to {what}. Can I? No: "
                       f"{why}. I should not pretend. Say sorry, give the "
                       f"reason in one line, and offer the tasks I can do instead.",
            "thanks": "This message is thanks or a goodbye, not a task. Reply "
                      "briefly and kindly, and leave the door open.",
        }[kind]

    def reply(self, example: Example) -> str:
        return example.answer

    def parse(self, answer_text: str) -> str | None:
        """The reply itself (glue answers are free text, judged by :meth:`evaluate`)."""
        return answer_text.strip() or None

    def constant_baseline(self, examples) -> None:
        """None: a glue reply is judged by a rubric, not compared with one answer."""
        return None

    def evaluate(self, example: Example, answer_text: str) -> bool:
        """Does the reply do what this kind of request calls for?

        greeting: greets back; identity: names itself Lantern; capabilities: names at
        least two of its skills; refusal: declines; thanks: acknowledges.
        """
        kind = example.fields["kind"]
        if kind == "capabilities":
            return sum(bool(p.search(answer_text)) for p in _SKILL_WORDS) >= 2
        return bool(_RUBRICS[kind].search(answer_text))
