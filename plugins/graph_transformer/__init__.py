"""A graph transformer for molecule graphs (node and edge states), for any-order objectives."""
