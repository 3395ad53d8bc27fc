"""The story the generator tells: personas, their channel mix, how fast they move through
the subscription journey and how often they leave. Numbers here are the knobs of realism."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STAGES = ("discover", "sign_up", "verify", "first_purchase", "onboarding", "repeat_purchase")
"""Stage ids of journey_defs/subscription.yaml, in order; the generator simulates this map."""
DISCOVER, SIGN_UP, VERIFY, FIRST_PURCHASE, ONBOARDING, REPEAT = range(6)

SOURCES = ("web", "email", "chat", "phone", "survey")


@dataclass(frozen=True)
class Persona:
    name: str
    weight: float
    email_discovery: float      # share discovering through a promo e-mail (a known CRM lead)
    continue_prob: dict         # stage left -> probability of reaching the next stage
    onboarding: float           # share of first purchasers who go through onboarding
    phone_orders: float         # share of first purchases placed by phone
    chat_onboarding: float      # share of onboarding done in chat rather than e-mail
    email_verify: float         # share verifying via the e-mail link (else the /verify page)
    support_rate: float         # chance of a support contact (detour) in each stage
    support_by_phone: float     # share of those contacts by phone (known customers only)
    nps_mean: float


PERSONAS = (
    Persona("digital_native", 0.45, 0.15,
            {DISCOVER: 0.42, SIGN_UP: 0.88, VERIFY: 0.66, FIRST_PURCHASE: 0.60, ONBOARDING: 0.70},
            onboarding=0.45, phone_orders=0.05, chat_onboarding=0.3, email_verify=0.85,
            support_rate=0.04, support_by_phone=0.2, nps_mean=8.0),
    Persona("support_seeker", 0.25, 0.30,
            {DISCOVER: 0.35, SIGN_UP: 0.80, VERIFY: 0.55, FIRST_PURCHASE: 0.50, ONBOARDING: 0.65},
            onboarding=0.70, phone_orders=0.40, chat_onboarding=0.7, email_verify=0.6,
            support_rate=0.25, support_by_phone=0.55, nps_mean=6.5),
    Persona("bargain_hunter", 0.30, 0.60,
            {DISCOVER: 0.30, SIGN_UP: 0.78, VERIFY: 0.45, FIRST_PURCHASE: 0.38, ONBOARDING: 0.55},
            onboarding=0.30, phone_orders=0.08, chat_onboarding=0.2, email_verify=0.9,
            support_rate=0.08, support_by_phone=0.3, nps_mean=7.0),
)

# Hours to reach the next stage: lognormal (median, sigma). Long tails make some customers stall.
DELAY_HOURS = {
    SIGN_UP: (20.0, 1.2),
    VERIFY: (2.0, 1.6),
    FIRST_PURCHASE: (30.0, 1.0),
    ONBOARDING: (24.0, 0.8),
    REPEAT: (9 * 24.0, 0.45),
}
ONBOARDING_TO_REPEAT_HOURS = (7 * 24.0, 0.45)

WEEKDAY_WEIGHT = np.array([1.15, 1.1, 1.05, 1.0, 0.95, 0.7, 0.6])  # Monday first
SKIP_VERIFY_RATE = 0.03       # continue past sign-up without verifying: a skipped required stage
BACKTRACK_RATE = 0.06         # revisit the pricing page after verifying
OFF_MAP_RATE = 0.10           # per stage: an event type the map does not know
OFF_MAP_EVENTS = ("video_played", "wishlist_added", "coupon_applied")
EXIT_RATE = 0.30              # droppers who leave explicitly (unsubscribe / cancel)
SECOND_DEVICE_RATE = 0.30     # signed-up customers who also browse from a second device
NPS_RATE = 0.35               # first purchasers answering the NPS survey
CHAT_RATING_RATE = 0.6        # chats ending with a CSAT rating
UNKNOWN_CALLERS_RATE = 0.01   # per customer: a support call from a number the CRM does not know
UNKNOWN_BOUNCES_RATE = 0.01   # per customer: a bounce to an address the CRM does not know

DISCOVER_PAGES = ("/", "/pricing", "/features", "/how-it-works")
SUPPORT_TOPICS = ("billing", "delivery", "technical")
