"""Fix: SNS email / email-json subscriptions stay pending confirmation.

Also: GetTopicAttributes counts the topic's subscriptions.

AWS behaviour restored
    An ``email`` or ``email-json`` subscription is *pending confirmation*
    until the address owner follows the link in the confirmation mail, which
    never happens in the emulator, so such a subscription stays pending:

    * Subscribe returns ``SubscriptionArn`` = ``pending confirmation`` (the
      literal string), unless ``ReturnSubscriptionArn=true``, which returns
      the subscription's real ARN.  Subscribing the same endpoint and
      protocol again answers the same and creates no second subscription.
    * ListSubscriptions and ListSubscriptionsByTopic list it with
      ``SubscriptionArn`` = ``PendingConfirmation`` (literal) and its real
      Owner, Protocol, Endpoint and TopicArn.
    * GetSubscriptionAttributes of the real ARN shows
      ``PendingConfirmation`` = ``"true"`` and
      ``ConfirmationWasAuthenticated`` = ``"false"``.
    * Publish delivers nothing to it (other subscriptions of the topic are
      served as before).
    * Unsubscribe, GetSubscriptionAttributes and SetSubscriptionAttributes
      with a SubscriptionArn that is not an ARN (``PendingConfirmation``,
      ``pending confirmation``) fail with InvalidParameter (HTTP 400):
      "Invalid parameter: SubscriptionArn Reason: An ARN must have at least 6
      elements, not 1".  Unsubscribe of the real ARN removes it; DeleteTopic
      removes it with the topic (moto already does both).

    Every other protocol (sqs, lambda, http, ...) is confirmed at once, as
    moto already does.

    GetTopicAttributes reports the topic's subscription counts as decimal
    strings: ``SubscriptionsConfirmed`` = its confirmed subscriptions,
    ``SubscriptionsPending`` = its subscriptions pending confirmation (the
    email / email-json ones above), ``SubscriptionsDeleted`` = ``"0"``.
    Only that topic's subscriptions count; Subscribe (a repeated one adds
    nothing), Unsubscribe and DeleteTopic (a topic created again under the
    same name starts at 0) show in the next answer.  AWS refreshes these
    counts only about once a minute; the emulator counts at every call, the
    same subscriptions ListSubscriptionsByTopic lists.

What moto 5.2.1 does instead
    Marks every subscription confirmed at Subscribe (``PendingConfirmation``
    false, ``ConfirmationWasAuthenticated`` true) and returns and lists its
    real ARN; Unsubscribe of ``PendingConfirmation`` answers 200 (nothing
    removed), Get/SetSubscriptionAttributes of it NotFound (HTTP 404).
    GetTopicAttributes answers ``SubscriptionsConfirmed`` /
    ``SubscriptionsPending`` / ``SubscriptionsDeleted`` = ``0`` always
    (fields of the Topic set at CreateTopic and never updated).
"""

from __future__ import annotations

from ._util import patch, truthy

PENDING_PROTOCOLS = ("email", "email-json")
RETURNED_WHILE_PENDING = "pending confirmation"  # Subscribe's answer
LISTED_WHILE_PENDING = "PendingConfirmation"  # ListSubscriptions(ByTopic)'s


def _pending(subscription) -> bool:
    return subscription.attributes.get("PendingConfirmation") is True


def _check_subscription_arn(arn) -> None:
    """AWS's validation of a SubscriptionArn parameter (before any lookup)."""
    from moto.sns.exceptions import SNSInvalidParameter

    if arn is None:
        return  # a missing parameter is left to moto / botocore
    elements = str(arn).split(":")
    if len(elements) < 6:
        raise SNSInvalidParameter(
            "Invalid parameter: SubscriptionArn Reason: An ARN must have at least "
            f"6 elements, not {len(elements)}"
        )
    if elements[0] != "arn":
        raise SNSInvalidParameter(
            f"Invalid parameter: SubscriptionArn Reason: {arn} does not start with arn"
        )


def _make_backend_subscribe(original):
    def subscribe(self, topic_arn, endpoint, protocol):
        subscription = original(self, topic_arn, endpoint, protocol)
        if protocol in PENDING_PROTOCOLS:
            # No confirmation can ever arrive: pending from creation on, and
            # still pending when the same endpoint subscribes again.
            subscription.attributes["PendingConfirmation"] = True
            subscription.attributes["ConfirmationWasAuthenticated"] = False
        return subscription

    return subscribe


def _make_response_subscribe(original):
    def subscribe(self):
        from moto.core.responses import ActionResult

        result = original(self)
        if truthy(self._get_param("ReturnSubscriptionArn")):
            return result
        subscription = self.backend.subscriptions.get(result.result["SubscriptionArn"])
        if subscription is not None and _pending(subscription):
            return ActionResult({"SubscriptionArn": RETURNED_WHILE_PENDING})
        return result

    return subscribe


def _listed(subscription):
    if not _pending(subscription):
        return subscription
    return {
        "SubscriptionArn": LISTED_WHILE_PENDING,
        "Owner": subscription.owner,
        "Protocol": subscription.protocol,
        "Endpoint": subscription.endpoint,
        "TopicArn": subscription.topic_arn,
    }


def _make_list(original):
    def listing(self):
        result = original(self)
        body = result.result
        body["Subscriptions"] = [_listed(s) for s in body["Subscriptions"]]
        return result

    return listing


def _make_publish(original):
    def publish(self, *args, **kwargs):
        if _pending(self):
            return None  # nothing is delivered before confirmation
        return original(self, *args, **kwargs)

    return publish


def _make_topic_attributes(original):
    def get_topic_attributes(self):
        result = original(self)  # NotFound for a missing topic, as before
        topic = self.backend.get_topic(self._get_param("TopicArn"))
        # The subscriptions ListSubscriptionsByTopic lists.
        subscriptions = self.backend._get_topic_subscriptions(topic)
        pending = sum(1 for s in subscriptions if _pending(s))
        attributes = result.result["Attributes"]
        attributes["SubscriptionsConfirmed"] = str(len(subscriptions) - pending)
        attributes["SubscriptionsPending"] = str(pending)
        attributes["SubscriptionsDeleted"] = "0"
        return result

    return get_topic_attributes


def _make_checked(original):
    def checked(self, arn, *args, **kwargs):
        _check_subscription_arn(arn)
        return original(self, arn, *args, **kwargs)

    return checked


def apply() -> None:
    from moto.sns.models import SNSBackend, Subscription
    from moto.sns.responses import SNSResponse

    original = getattr(SNSBackend, "_emulator_orig_subscribe", SNSBackend.subscribe)
    patch(SNSBackend, "subscribe", _make_backend_subscribe(original))
    for name in ("unsubscribe", "get_subscription_attributes", "set_subscription_attributes"):
        original = getattr(SNSBackend, f"_emulator_orig_{name}", getattr(SNSBackend, name))
        patch(SNSBackend, name, _make_checked(original))

    original = getattr(SNSResponse, "_emulator_orig_subscribe", SNSResponse.subscribe)
    patch(SNSResponse, "subscribe", _make_response_subscribe(original))
    for name in ("list_subscriptions", "list_subscriptions_by_topic"):
        original = getattr(SNSResponse, f"_emulator_orig_{name}", getattr(SNSResponse, name))
        patch(SNSResponse, name, _make_list(original))
    original = getattr(
        SNSResponse, "_emulator_orig_get_topic_attributes", SNSResponse.get_topic_attributes
    )
    patch(SNSResponse, "get_topic_attributes", _make_topic_attributes(original))

    original = getattr(Subscription, "_emulator_orig_publish", Subscription.publish)
    patch(Subscription, "publish", _make_publish(original))
