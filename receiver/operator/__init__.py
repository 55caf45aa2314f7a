"""What an operator can find out and do, written once: ``service`` holds the queries and
actions, ``models`` what they answer.  The HTTP API and the CLI both call ``Operator``."""

from receiver.operator.service import EventQuery, Operator, listing_params, query_from

__all__ = ["EventQuery", "Operator", "listing_params", "query_from"]
