"""The metadata cache: METADATA answers from the newest image, one lease per request.

This is where AutoMQ's bug happened (#2087): the cache checked failover for every
partition of every METADATA response while another consumer released the image. Here
the cache keeps its own reference in an ImageHolder (retain new, swap, release old) and
every request leases the current image once and answers entirely from it; the response
carries the provenance it was answered from.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from uuid import UUID

from broker.cache._answers import (
    DEFAULT_LISTENER,
    AnswerSettings,
    ClusterDescription,
    ImageAnswers,
    PartitionLeader,
    answers_key,
)
from broker.cache._describe import (
    ConfigsRequest,
    ConfigsResult,
    TopicPartitionsRequest,
    TopicPartitionsResponse,
    describe_configs,
    describe_topic_partitions,
)
from broker.cache._failover import MissingStreamPolicy
from broker.cache._models import BrokerMetadata, MetadataRequest, MetadataResponse
from broker.errors import ConfigurationError
from broker.metadata import DerivedKey, MetadataImage
from broker.metadata.pipeline import HoldingConsumer

__all__ = ["MetadataCache"]


class MetadataCache(HoldingConsumer):
    """A latest-image consumer answering METADATA from its own image reference."""

    def __init__(
        self,
        cluster_id: str,
        *,
        failover_check: bool = True,
        missing_stream: MissingStreamPolicy = "skip",
        rng: random.Random | None = None,
        name: str = "metadata-cache",
    ) -> None:
        if missing_stream not in ("skip", "unavailable"):
            raise ConfigurationError(
                f"missing_stream must be 'skip' or 'unavailable', got {missing_stream!r}"
            )
        super().__init__(name)
        self.cluster_id = cluster_id
        self.failover_check = failover_check
        self.missing_stream: MissingStreamPolicy = missing_stream
        self.rng = rng or random.Random()
        """Draws the controller id of each answer (Kafka answers a random live broker)."""
        self._keys: dict[str, DerivedKey[ImageAnswers]] = {}
        self.requests = 0

    def settings(self, listener: str = DEFAULT_LISTENER) -> AnswerSettings:
        """How this cache answers requests that arrive on ``listener``."""
        return AnswerSettings(self.cluster_id, listener, self.failover_check, self.missing_stream)

    def answers(self, image: MetadataImage, listener: str = DEFAULT_LISTENER) -> ImageAnswers:
        """The answers of ``image`` (which the caller holds) for this cache's settings."""
        key = self._keys.get(listener)
        if key is None:
            key = self._keys[listener] = answers_key(self.settings(listener))
        return image.derived(key)

    # METADATA ----------------------------------------------------------------------------

    def metadata(
        self, request: MetadataRequest, *, listener: str = DEFAULT_LISTENER
    ) -> MetadataResponse:
        """Answer one METADATA request; one lease, one image, for the whole answer."""
        with self._holder.lease() as image:
            return self.answer(image, request, listener=listener)

    def answer(
        self, image: MetadataImage, request: MetadataRequest, *, listener: str = DEFAULT_LISTENER
    ) -> MetadataResponse:
        """Answer from ``image``, which the caller holds a lease on, with this cache's settings."""
        self.requests += 1
        return self.answers(image, listener).response(image, request, self.rng)

    # other reads, each on one lease ---------------------------------------------------------

    def topic_id(self, name: str) -> UUID | None:
        """The id of topic ``name`` in the current image, if it exists."""
        with self._holder.lease() as image:
            return image.topics.by_name.get(name)

    def topic_name(self, topic_id: UUID) -> str | None:
        """The name of topic ``topic_id`` in the current image, if it exists."""
        with self._holder.lease() as image:
            topic = image.topics.by_id.get(topic_id)
            return topic.name if topic is not None else None

    def alive_brokers(self, listener: str = DEFAULT_LISTENER) -> list[BrokerMetadata]:
        """Unfenced brokers with ``listener``, by id: the broker list of an answer."""
        with self._holder.lease() as image:
            return list(self.answers(image, listener).views.listed)

    def describe_cluster(self, listener: str = DEFAULT_LISTENER) -> ClusterDescription:
        """What DescribeCluster answers, from the current image."""
        with self._holder.lease() as image:
            answers = self.answers(image, listener)
            return ClusterDescription(
                self.cluster_id,
                answers.controller_id(self.rng),
                answers.views.listed,
                image.provenance,
            )

    def describe_configs(
        self,
        resources: Iterable[ConfigsRequest],
        *,
        broker_id: int | None = None,
        include_synonyms: bool = False,
    ) -> tuple[ConfigsResult, ...]:
        """What DescribeConfigs answers when broker ``broker_id`` is asked, from the
        current image's dynamic configs."""
        with self._holder.lease() as image:
            return describe_configs(
                image, resources, broker_id=broker_id, include_synonyms=include_synonyms
            )

    def describe_topic_partitions(
        self, request: TopicPartitionsRequest, *, listener: str = DEFAULT_LISTENER
    ) -> TopicPartitionsResponse:
        """What DescribeTopicPartitions answers, from the current image's Metadata answers."""
        with self._holder.lease() as image:
            return describe_topic_partitions(image, self.answers(image, listener), request)

    def partition_leader(
        self, topic: str, partition: int, *, listener: str = DEFAULT_LISTENER
    ) -> PartitionLeader:
        """The leader a METADATA request would report, with the same error semantics."""
        with self._holder.lease() as image:
            return self.answers(image, listener).partition_leader(image, topic, partition)
