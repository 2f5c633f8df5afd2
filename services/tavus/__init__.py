"""Tavus: the REST API (:mod:`.api`), the conversations we open and always end
(:mod:`.conversations`), which renderer a run uses (:mod:`.plan`), the two Pipecat
renderers (:mod:`.renderers`) and personas fetched from Tavus (:mod:`.personas`).

With Pipecat, Tavus only renders: we create a Tavus conversation with the
``pipecat0`` persona (Tavus lip-syncs the audio we send it over
``conversation.echo``); the persona's behaviour stays with us.
"""
