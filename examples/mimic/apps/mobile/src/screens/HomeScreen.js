// The home screen: a title and a primary action, sized on the spacing scale.
export function HomeScreen({ theme }) {
  const styles = {
    container: { padding: theme.spacing.lg, backgroundColor: theme.color.neutral["0"] },
    title: { fontSize: theme.font.size.heading, color: theme.color.neutral["900"] },
    action: { backgroundColor: theme.color.brand.primary, padding: theme.spacing.md },
  };
  return { type: "View", style: styles.container, children: ["Welcome", styles.title, styles.action] };
}
