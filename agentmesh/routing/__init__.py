"""Matching steps to agents: filtered kNN per tier, constraint filter, cost-biased score, tier ladder."""

from agentmesh.routing.matcher import Match, Matcher, PreparedQuery, RouteExplanation
from agentmesh.routing.scoring import MatchWeights, ladder, pick_tier, score, view_similarity

__all__ = [
    "Match",
    "MatchWeights",
    "Matcher",
    "PreparedQuery",
    "RouteExplanation",
    "ladder",
    "pick_tier",
    "score",
    "view_similarity",
]
